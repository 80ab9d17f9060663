"""What TRL's fused LM head must see of a PEFT policy: the output projection with its trainable SID rows."""

import torch


class _AdaptedHead(torch.nn.Module):
    """What TRL's fused LM head should see: the output projection *with* PEFT's trainable SID rows.

    TRL computes per-token log-probs by reading ``get_output_embeddings().weight`` directly
    (never calling the module), which would silently use the LM head without the SID rows that
    SFT trained and RL keeps training. This view returns the merged weight, or the base weight
    while adapters are disabled (TRL's KL reference), so gradients reach the trainable rows.
    """

    def __init__(self, layer):
        super().__init__()
        self._layer = [layer]  # a list: not registered as a submodule (no double counting/saving)

    @property
    def weight(self):
        layer = self._layer[0]
        base = layer.base_layer.weight
        if layer.disable_adapters or not layer.active_adapters or layer.merged:
            return base
        return layer.get_merged_weights(layer.active_adapters)

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
