"""What TRL's fused LM head must see of a PEFT policy: the output projection with its trainable SID rows."""

import torch


class _RowsInto(torch.autograd.Function):
    """Write the active SID rows into the view's buffer and return it (sharing its storage);
    the rows' gradient is the gradient's rows."""

    @staticmethod
    def forward(ctx, rows, view):
        ctx.index, ctx.dtype = view.index, rows.dtype
        view.buffer.index_copy_(0, view.index, rows.to(view.buffer.dtype))
        return view.buffer.view_as(view.buffer)

    @staticmethod
    def backward(ctx, grad):
        return grad.index_select(0, ctx.index).to(ctx.dtype), None


class _AdaptedHead(torch.nn.Module):
    """What TRL's fused LM head should see: the output projection *with* PEFT's trainable SID rows.

    TRL computes per-token log-probs by reading ``get_output_embeddings().weight`` directly
    (never calling the module), which would silently use the LM head without the SID rows that
    SFT trained and RL keeps training. This view returns the merged weight, or the base weight
    while adapters are disabled (TRL's KL reference), so gradients reach the trainable rows.

    The merged weight is one buffer, copied from the base once and then only its SID rows
    rewritten on each read: PEFT's own merge copies the whole vocab x hidden matrix every time
    (1.1 GB for Qwen2.5-7B's untied head), and TRL reads the weight three times per forward.
    The buffer lives as long as the policy (one head's size: 0.47 GB for Qwen2.5-1.5B's tied
    head in bf16). Rewriting the rows bumps its version, so a backward through a weight read
    before a later read fails loudly (autograd's in-place check) instead of using rows that changed.
    """

    def __init__(self, layer):
        super().__init__()
        self._layer = [layer]  # a list: not registered as a submodule (no double counting/saving)
        self.buffer = self.index = self._key = self._adapters = None

    def _fit(self, base, adapters):
        """(Re)build the buffer when the base weight moved or changed dtype; when the active
        adapters change, put back the base rows of the old ones and index the new ones'."""
        key = (base.data_ptr(), base.dtype, base.device, tuple(base.shape))
        if key != self._key:
            self.buffer, self._key, self._adapters = base.detach().clone(), key, None
        if adapters != self._adapters:
            if self._adapters is not None:
                with torch.no_grad():
                    self.buffer.index_copy_(0, self.index, base.detach().index_select(0, self.index))
            rows = [i for a in adapters for i in self._layer[0].token_indices[a]]
            self.index, self._adapters = torch.tensor(rows, device=base.device), adapters

    @property
    def weight(self):
        layer = self._layer[0]
        base = layer.base_layer.weight
        if layer.disable_adapters or not layer.active_adapters or layer.merged:
            return base
        adapters = list(layer.active_adapters)
        self._fit(base, adapters)
        deltas = [layer.trainable_tokens_delta[a] for a in adapters]
        return _RowsInto.apply(deltas[0] if len(deltas) == 1 else torch.cat(deltas), self)

    @property
    def bias(self):
        return getattr(self._layer[0].base_layer, "bias", None)


def expose_adapted_lm_head(peft_model) -> None:
    """Point the base model's ``get_output_embeddings`` at :class:`_AdaptedHead` when the LM head
    carries trainable SID rows (tied or untied); a plain LM head is left alone."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    base = peft_model.get_base_model()
    head = base.get_output_embeddings()
    layer = getattr(head, "token_adapter", head)
    if isinstance(layer, TrainableTokensLayer):
        view = _AdaptedHead(layer)
        base.get_output_embeddings = lambda: view
