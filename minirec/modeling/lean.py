"""Leaner training forwards for the PEFT layers minirec trains: same results, same saved adapters.

PEFT's own forwards keep more memory alive for backward, and allocate more short-lived
activation-sized tensors, than the computation needs. On a small model with a large vocabulary
that extra outweighed everything LoRA saves (docs/RESULTS.md, "Memory and speed of the
fine-tuning modes" has the measurements). Three places:

* LoRA dropout (on CPU). ``lora_B(lora_A(dropout(x)))`` makes every adapted Linear keep its own
  dropped copy of the input for ``lora_A``'s weight gradient, and torch's CPU dropout also keeps
  its mask as a float tensor of the input's size: two input-sized tensors per layer, where
  q/k/v (and gate/up) share one input. Here the mask is drawn the same way from the same random
  numbers; backward keeps only the shared input and the random generator's state (5 KB), and
  draws the mask again from that state: the same values and gradients, bit for bit. (On a GPU,
  PEFT's dropout runs as it is.)
* Adding the LoRA update. ``result + lora_B(h) * scaling`` allocates three output-sized tensors
  per layer and frees two; between the activations autograd keeps, such holes fragment glibc's
  heap, which the process's peak RSS pays for. Here the update is added into the base layer's
  output in place (``addmm_``: the frozen base layer does not keep its output for backward).
* Trainable SID rows (PEFT's trainable tokens). Each forward builds the whole embedding matrix
  with the SID rows swapped in (``index_copy``), once for the input embedding and once for the
  tied LM head, keeps the LM head's copy for backward, and backward makes dense vocabulary-sized
  gradients of both. Here the frozen base layer runs as it is and only the SID rows are touched:
  embedding outputs at SID positions are replaced by their trained rows (the same values), and
  the SID columns of the logits get ``h @ (rows - base rows)^T`` added (PEFT's ``h @ rows^T`` up
  to float rounding); the gradients are the same.

Only the layers' forward computation changes (their class is switched to a subclass): modules,
parameters, their names and the saved files are PEFT's own, so an adapter still loads with plain
``PeftModel.from_pretrained``. Whatever these forwards do not cover takes PEFT's path unchanged:
merged or disabled adapters, mixed-adapter batches, DoRA and the other LoRA variants, LoRA
biases, autocast, adapters in another dtype than the input, DeepSpeed ZeRO-3's partitioned
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
    """One reusable CPU buffer per dtype (and thread) for the dropout noise, which lives only
    inside one call: drawing it into a fresh tensor for each of the ~7 adapted Linear layers per
    block, between the activations autograd keeps, fragmented glibc's heap (~0.2 GB more peak
    RSS on SmolLM2). It stays as large as the largest LoRA input seen, one activation."""

    def __init__(self):
        self.buffers = {}

    def like(self, x: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(x.dtype)
        if buf is None or buf.numel() < x.numel():
            buf = self.buffers[x.dtype] = torch.empty(x.numel(), dtype=x.dtype)
        return buf[: x.numel()].view(x.shape)


_SCRATCH = _Scratch()


def _draw_noise(x: torch.Tensor, p: float, generator=None) -> torch.Tensor:
    """What ``F.dropout(x, p, training=True)`` multiplies a contiguous CPU ``x`` by: the same
    draws (``bernoulli_`` on an ``x``-shaped tensor of ``x``'s dtype), the same scaled values."""
    return _SCRATCH.like(x).bernoulli_(1 - p, generator=generator).div_(1 - p)


class _DropoutLinear(torch.autograd.Function):
    """``F.linear(F.dropout(x, p), weight)`` on CPU, keeping only ``x`` (shared with the other
    layers that read the same input) for backward, which draws the mask again from the random
    state the forward drew it from: no float mask and no dropped copy of the input are kept."""

    @staticmethod
    def forward(ctx, x, weight, p):
        ctx.p, ctx.rng_state = p, torch.get_rng_state()
        noise = _draw_noise(x, p)
        out = F.linear(noise.mul_(x), weight)  # noise * x == x * noise, bit for bit
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        generator = torch.Generator()
        generator.set_state(ctx.rng_state)
        noise = _draw_noise(x, ctx.p, generator)  # the forward's noise, bit for bit
        grad_2d = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = None
        # The same operations autograd runs for F.linear(x * noise, weight), in the same layouts.
        if ctx.needs_input_grad[0]:
            grad_x = grad_2d.mm(weight).view(*x.shape[:-1], -1).mul_(noise)
        if ctx.needs_input_grad[1]:
            grad_w = grad_2d.t().mm(noise.mul_(x).reshape(-1, x.shape[-1]))
        return grad_x, grad_w, None


def _lora_a(x, lora_a: nn.Linear, dropout: nn.Module):
    if (isinstance(dropout, nn.Dropout) and dropout.training and dropout.p > 0 and torch.is_grad_enabled()
            and x.device.type == "cpu" and x.is_contiguous() and (x.requires_grad or lora_a.weight.requires_grad)):
        return _DropoutLinear.apply(x, lora_a.weight, dropout.p)
    return lora_a(dropout(x))


class _LeanLoraForward:
    """The forward of a plain LoRA layer, with the two changes of the module docstring."""

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

    def forward(self, x, *args, **kwargs):
        if not self._lean_applies(x, kwargs):
            return super().forward(x, *args, **kwargs)
        kwargs.pop("adapter_names", None)
        kwargs.pop("alora_offsets", None)
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

    def forward_adapters(self, x, active_adapters, *args, **kwargs):
        if not self._lean_applies(active_adapters):
            return super().forward_adapters(x, active_adapters, *args, **kwargs)
        self._check_overlapping_tokens(active_adapters)
        base = self.base_layer
        weight = base.weight
        result = base(x)  # the frozen layer as it is; PEFT's path passes no other arguments either
        for name in active_adapters:
            idx = torch.tensor(self.token_indices[name], device=x.device)
            rows = self.trainable_tokens_delta[name].to(weight)
            if isinstance(base, nn.Embedding):
                table = torch.full((weight.shape[0],), -1, dtype=torch.long, device=x.device)
                table[idx] = torch.arange(len(idx), device=x.device)  # id -> its SID row, -1 elsewhere
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
