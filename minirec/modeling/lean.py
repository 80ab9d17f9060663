"""Leaner training forwards for the PEFT layers minirec trains: same results, same saved adapters.

Where they apply: the LoRA savings below are CPU savings. On a GPU, SFT runs under bf16 autocast
with fp32 adapters, and such layers take PEFT's own forward (see the list at the end); what GPU
users get is the SID-row layer (no merged vocab x hidden copy per forward: ~466 MB per copy for
Qwen2.5-1.5B in bf16; its bf16 results equal PEFT's up to bf16 rounding) and, with matching
dtypes (DeepSpeed bf16), the in-place add of the LoRA update. All figures below are CPU, fp32.

Why by hand: PEFT's forwards keep more for backward, and allocate more short-lived
activation-sized tensors, than the computation needs, and on a small model that extra
outweighed everything LoRA saves. Measured with ``bench/peft_memory.py --modes before_after
--breakdown True`` (SmolLM2-135M, 8 x 128 tokens, fp32, CPU; docs/RESULTS.md, "Memory and speed
of the fine-tuning modes"): peak RSS while training, PEFT's forwards -> these, LoRA 5,017 ->
3,304 MB (1.12x -> 0.74x of full fine-tuning's 4,466), QLoRA 4,774 -> 2,967 MB, freeze 2,995 ->
2,875 MB; what autograd keeps for backward, LoRA 2,341 -> 1,200 MB (full fine-tuning: 1,507).

* LoRA dropout (on CPU). ``lora_B(lora_A(dropout(x)))`` makes every adapted Linear keep its own
  dropped copy of the input for ``lora_A``'s weight gradient, and torch's CPU dropout also keeps
  its mask as a float tensor of the input's size: two input-sized tensors per layer, where
  q/k/v (and gate/up) share one input: 855 MB of LoRA's 2,341 (``--lora_dropout 0``: 1,486).
  Here the mask is drawn the same way from the same random numbers; backward keeps only the
  shared input and the random generator's state (5 KB), and draws the mask again from that
  state: the same values and gradients, bit for bit; dropout then costs no memory (LoRA with and
  without it: 3,304 and 3,290 MB). (On a GPU, PEFT's dropout runs as it is.)
* A LoRA layer over a plain frozen ``nn.Linear`` is one autograd node (:class:`_LoraLinear`).
  ``result + lora_B(h) * scaling`` allocates three output-sized tensors per layer and frees two,
  and backward makes a second input-sized gradient (LoRA's) for autograd to add to the base
  layer's; between the activations autograd keeps, such short-lived tensors fragment glibc's
  heap, whose retained free memory counts in RSS. Here the update is added into the base
  output in place (``addmm_``) and LoRA's input gradient into the base layer's. Making the layer
  one node (the in-place add was there before) took LoRA's peak 3,619 -> 3,438 MB (the heap's
  retained share at the peak 693 -> 508 MB; ``--modes lora`` before and after). Over a 4-bit
  base the layer stays two nodes and the update is added with one ``addmm`` (out of place:
  bitsandbytes' output is a view made inside its autograd Function).
* The MLP's down projection reads ``act(gate) * up``, whose two factors autograd keeps for the
  product's own backward; LoRA's A keeps the product too (6 MB per layer here, 180 MB in all).
  Here backward multiplies the factors again (the same values, bit for bit) instead
  (:func:`_keep_input`): LoRA's peak 3,438 -> 3,261 MB in the same before/after pair. Not under
  saved-tensor hooks that let a tensor be read once only (gradient checkpointing's).
* Trainable SID rows (PEFT's trainable tokens). Each forward builds the whole embedding matrix
  with the SID rows swapped in (``index_copy``), once for the input embedding and once for the
  tied LM head, keeps the LM head's copy for backward (106 MB in freeze: 1,164 -> 1,058 MB kept),
  and backward makes dense vocabulary-sized gradients of both. Here the frozen base layer runs as
  it is and only the SID rows are touched: embedding outputs at SID positions are replaced by
  their trained rows (the same values), and the SID columns of the logits get
  ``h @ (rows - base rows)^T`` added (PEFT's ``h @ rows^T`` up to float rounding); the gradients
  are the same.

What is left above LoRA's memory in use is not PEFT's: at LoRA's peak 751 MB of anonymous memory
are neither in use through malloc nor there before the first step, mostly freed heap that glibc
keeps; under a fixed 1 MiB mmap threshold (the bench's ``+mmap`` runs) LoRA peaks at 2,897 MB
(0.65x), for ~4x the system CPU time (page faults).

Only the layers' forward computation changes (their class is switched to a subclass): modules,
parameters, their names and the saved files are PEFT's own, so an adapter still loads with plain
``PeftModel.from_pretrained``. Whatever these forwards do not cover takes PEFT's path unchanged:
merged or disabled adapters, mixed-adapter batches, DoRA and the other LoRA variants, LoRA
biases, autocast (for LoRA layers; the SID-row layer runs its own path under autocast too),
adapters in another dtype than the input, DeepSpeed ZeRO-3's partitioned
parameters, an LM head with a bias, an embedding with ``max_norm``, ``scale_grad_by_freq`` or
sparse gradients.
"""

import threading

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
from torch import nn

try:
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit
except ImportError:  # no bitsandbytes
    LoraLinear4bit = None


def _partitioned(*tensors) -> bool:
    """DeepSpeed ZeRO-3 parameters hold their values only inside their own module's forward."""
    return any(hasattr(t, "ds_id") for t in tensors)


class _Scratch(threading.local):
    """Reusable CPU buffers per dtype and slot (and thread) for what lives only inside one call
    (the dropout noise; LoRA's part of an input gradient), instead of a fresh input-sized tensor
    per adapted Linear between the activations autograd keeps (see the heap above). Each stays as
    large as the largest LoRA input seen, one activation."""

    def __init__(self):
        self.buffers = {}

    def like(self, x: torch.Tensor, slot: int = 0) -> torch.Tensor:
        buf = self.buffers.get((x.dtype, slot))
        if buf is None or buf.numel() < x.numel():
            buf = self.buffers[x.dtype, slot] = torch.empty(x.numel(), dtype=x.dtype)
        return buf[: x.numel()].view(x.shape)


_SCRATCH = _Scratch()


def _draw_noise(x: torch.Tensor, p: float, generator=None) -> torch.Tensor:
    """What ``F.dropout(x, p, training=True)`` multiplies a contiguous CPU ``x`` by: the same
    draws (``bernoulli_`` on an ``x``-shaped tensor of ``x``'s dtype), the same scaled values."""
    return _SCRATCH.like(x).bernoulli_(1 - p, generator=generator).div_(1 - p)


def _keep_input(ctx, x: torch.Tensor) -> tuple:
    """What backward needs to have ``x`` again: ``(x,)`` to save, or nothing when ``x`` is the
    product of two tensors that autograd keeps anyway for the product's own backward (the
    SwiGLU product ``act(gate) * up`` that an MLP's down projection reads): backward then
    multiplies the two again (:func:`_input`; the same values, bit for bit) instead of keeping a
    third activation-sized tensor. Autograd runs the product's backward after ours (it needs our
    gradient), so its saved factors are still there."""
    node = x.grad_fn
    if (node is not None and node.name() == "MulBackward0" and x._base is None and _saved_tensors_unhooked()
            and all(fn is not None for fn, _ in node.next_functions)):  # both factors need grad: both are saved
        ctx.product = node
        return ()
    ctx.product = None
    return (x,)


def _saved_tensors_unhooked() -> bool:
    """No saved-tensor hooks are active, or only ones marked ``keeps_tensors`` (their pack returns
    the tensor itself). Others, such as gradient checkpointing's, let a saved tensor be read once
    only, which is the product's own backward's."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    if top is None:
        return False
    hooks = top(False)
    return hooks is None or getattr(hooks[0], "keeps_tensors", False)


def _input(ctx, saved: tuple) -> torch.Tensor:
    if ctx.product is None:
        return saved[0]
    return ctx.product._saved_self * ctx.product._saved_other


def _noise_for_backward(ctx, x):
    if not ctx.p:
        return None
    generator = torch.Generator()
    generator.set_state(ctx.rng_state)
    return _draw_noise(x, ctx.p, generator)  # the forward's noise, bit for bit


class _LoraA(torch.autograd.Function):
    """``F.linear(F.dropout(x, p), a)`` on CPU (``p`` may be 0), keeping for backward only what
    :func:`_keep_input` keeps of ``x`` (shared with the other layers that read the same input)
    and the random state the mask was drawn from; backward draws the mask again from it: no
    float mask and no dropped copy of the input are kept."""

    @staticmethod
    def forward(ctx, x, a, p):
        ctx.p = p
        if p:
            ctx.rng_state = torch.get_rng_state()
        h = F.linear(_draw_noise(x, p).mul_(x) if p else x, a)  # noise * x == x * noise, bit for bit
        ctx.save_for_backward(a, *_keep_input(ctx, x))
        return h

    @staticmethod
    def backward(ctx, grad):
        a, *saved = ctx.saved_tensors
        x = _input(ctx, saved)
        noise = _noise_for_backward(ctx, x)
        grad_2d = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_a = None
        # The same operations autograd runs for F.linear(x * noise, a), in the same layouts.
        if ctx.needs_input_grad[0]:
            grad_x = grad_2d.mm(a).view(*x.shape[:-1], -1)
            if noise is not None:
                grad_x.mul_(noise)
        if ctx.needs_input_grad[1]:
            grad_a = grad_2d.t().mm((x if noise is None else noise.mul_(x)).reshape(-1, x.shape[-1]))
        return grad_x, grad_a, None


class _LoraLinear(torch.autograd.Function):
    """A whole LoRA layer over a frozen ``nn.Linear``, on CPU, as one autograd node:
    ``F.linear(x, weight, bias) + scaling * F.linear(F.linear(F.dropout(x, p), a), b)``, keeping
    what :class:`_LoraA` keeps and the rank-r ``h``. Backward adds LoRA's part of the input's
    gradient into the base layer's (in place) instead of making a second input-sized gradient for
    autograd to sum, and the LoRA update goes into the base output in place (``addmm_``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling, p):
        ctx.p, ctx.scaling = p, scaling
        if p:
            ctx.rng_state = torch.get_rng_state()
        h = F.linear(_draw_noise(x, p).mul_(x) if p else x, a)
        out = F.linear(x, weight, bias)
        out.view(-1, out.shape[-1]).addmm_(h.view(-1, h.shape[-1]), b.t(), alpha=scaling)
        ctx.save_for_backward(weight, a, b, h, *_keep_input(ctx, x))
        return out

    @staticmethod
    def backward(ctx, grad):
        weight, a, b, h, *saved = ctx.saved_tensors
        x = _input(ctx, saved)
        noise = _noise_for_backward(ctx, x)
        g = grad.reshape(-1, grad.shape[-1])
        grad_h = g.mm(b).mul_(ctx.scaling)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = g.mm(weight)
            if noise is None:
                grad_x.addmm_(grad_h, a)
            else:
                part = torch.mm(grad_h, a, out=_SCRATCH.like(grad_x, slot=1))
                grad_x.add_(part.mul_(noise.view(part.shape)))
            grad_x = grad_x.view(x.shape)
        if ctx.needs_input_grad[3]:
            grad_a = grad_h.t().mm((x if noise is None else noise.mul_(x)).reshape(-1, x.shape[-1]))
        if ctx.needs_input_grad[4]:
            grad_b = g.t().mm(h.reshape(-1, h.shape[-1])).mul_(ctx.scaling)
        return grad_x, None, None, grad_a, grad_b, None, None


def _dropout_p(dropout: nn.Module) -> float:
    return dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0


def _lora_a(x, lora_a: nn.Linear, dropout: nn.Module):
    if torch.is_grad_enabled() and x.device.type == "cpu" and x.is_contiguous():
        return _LoraA.apply(x, lora_a.weight, _dropout_p(dropout))
    return lora_a(dropout(x))


class _LeanLoraForward:
    """The forward of a plain LoRA layer, with the changes of the module docstring."""

    def _lean_applies(self, x, kwargs) -> bool:
        if self.disable_adapters or self.merged:
            return False
        if kwargs.get("adapter_names") is not None or kwargs.get("alora_offsets") is not None:
            return False
        if torch.is_autocast_enabled(x.device.type):
            return False
        for name in self.active_adapters:
            if name not in self.lora_A.keys():
                continue
            lora_a, lora_b, dropout = self.lora_A[name], self.lora_B[name], self.lora_dropout[name]
            if (name in self.lora_variant or lora_b.bias is not None
                    or not isinstance(dropout, (nn.Dropout, nn.Identity)) or getattr(dropout, "inplace", False)
                    or not x.dtype == lora_a.weight.dtype == lora_b.weight.dtype
                    or _partitioned(lora_a.weight, lora_b.weight)):
                return False
        return True

    def _whole_layer_applies(self, x, args, kwargs) -> bool:
        """:class:`_LoraLinear` runs the base layer itself: only a plain, frozen ``nn.Linear``
        without hooks, in training on CPU."""
        base = self.base_layer
        return (type(base) is nn.Linear and not args and not kwargs and torch.is_grad_enabled()
                and x.device.type == "cpu" and x.is_contiguous() and x.dtype == base.weight.dtype
                and not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad)
                and not _partitioned(base.weight) and not (base._forward_hooks or base._forward_pre_hooks))

    def forward(self, x, *args, **kwargs):
        if not self._lean_applies(x, kwargs):
            return super().forward(x, *args, **kwargs)
        kwargs.pop("adapter_names", None)
        kwargs.pop("alora_offsets", None)
        base = self.base_layer
        names = [n for n in self.active_adapters if n in self.lora_A.keys()]
        if len(names) == 1 and self._whole_layer_applies(x, args, kwargs):
            name = names[0]
            return _LoraLinear.apply(x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                                     self.scaling[name], _dropout_p(self.lora_dropout[name]))
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            if name not in self.lora_A.keys():
                continue
            h = _lora_a(x, self.lora_A[name], self.lora_dropout[name])
            weight_b, scaling = self.lora_B[name].weight, self.scaling[name]
            if result.dtype == weight_b.dtype and result.is_contiguous():
                out_2d, h_2d = result.view(-1, result.shape[-1]), h.reshape(-1, h.shape[-1])
                if result._is_view():  # bitsandbytes' 4-bit output: a view made in its autograd Function
                    result = torch.addmm(out_2d, h_2d, weight_b.t(), alpha=scaling).view(result.shape)
                else:
                    # In place: the base layer does not keep its output for backward (its weight
                    # is frozen), and addmm_ passes the gradient through without a copy.
                    out_2d.addmm_(h_2d, weight_b.t(), alpha=scaling)
            else:
                result = result + (F.linear(h, weight_b) * scaling).to(result.dtype)
        return result


class LeanLoraLinear(_LeanLoraForward, LoraLinear):
    """PEFT's ``lora.Linear``, lean forward."""


LEAN_LORA_CLASSES = {LoraLinear: LeanLoraLinear}
if LoraLinear4bit is not None:
    class LeanLoraLinear4bit(_LeanLoraForward, LoraLinear4bit):
        """PEFT's ``lora.Linear4bit`` (QLoRA), lean forward."""

    LEAN_LORA_CLASSES[LoraLinear4bit] = LeanLoraLinear4bit


class LeanTrainableTokensLayer(TrainableTokensLayer):
    """PEFT's trainable tokens, computed on the SID rows only (see the module docstring)."""

    def _lean_applies(self, active_adapters) -> bool:
        base = self.base_layer
        if self.disable_adapters or not active_adapters or self.merged or _partitioned(base.weight):
            return False
        if isinstance(base, nn.Embedding):
            return base.max_norm is None and not base.scale_grad_by_freq and not base.sparse
        return isinstance(base, nn.Linear) and base.bias is None

    def _indices(self, name, vocab, device):
        """The adapter's SID ids and an id -> SID-row table (-1 elsewhere), made once per device
        instead of on every forward (the class is switched in place, so no __init__ sets the cache)."""
        ids = tuple(self.token_indices[name])
        cache = self.__dict__.setdefault("_lean_index_cache", {})
        key = (name, str(device), vocab, ids)
        if key not in cache:
            idx = torch.tensor(ids, device=device)
            table = torch.full((vocab,), -1, dtype=torch.long, device=device)
            table[idx] = torch.arange(len(idx), device=device)
            cache[key] = (idx, table)
        return cache[key]

    def forward_adapters(self, x, active_adapters, *args, **kwargs):
        if not self._lean_applies(active_adapters):
            return super().forward_adapters(x, active_adapters, *args, **kwargs)
        self._check_overlapping_tokens(active_adapters)
        base = self.base_layer
        weight = base.weight
        result = base(x)  # the frozen layer as it is; PEFT's path passes no other arguments either
        for name in active_adapters:
            idx, table = self._indices(name, weight.shape[0], x.device)
            rows = self.trainable_tokens_delta[name].to(weight)
            if isinstance(base, nn.Embedding):
                local = table[x]
                embedded = F.embedding(local.clamp(min=0), rows)
                scale = self._get_embed_scale()
                if scale is not None:
                    embedded = embedded * scale.to(embedded.dtype)
                result = torch.where((local >= 0).unsqueeze(-1), embedded.to(result.dtype), result)
            else:
                change = rows - weight.index_select(0, idx)
                # In place, as for LoRA above: nothing keeps the head's output for backward.
                result = result.index_add_(-1, idx, F.linear(x, change).to(result.dtype))
        return result


def lean_peft_model(model) -> dict:
    """Switch ``model``'s LoRA and trainable-token layers to the lean forwards above, in place;
    returns how many of each were switched."""
    counts = {"lora": 0, "trainable_tokens": 0}
    for module in model.modules():
        lean = LEAN_LORA_CLASSES.get(type(module))
        if lean is not None:
            module.__class__ = lean
            counts["lora"] += 1
        elif type(module) is TrainableTokensLayer:
            module.__class__ = LeanTrainableTokensLayer
            counts["trainable_tokens"] += 1
    return counts
