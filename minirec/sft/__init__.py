"""The SFT stage: :class:`SFTConfig` (every flag, documented) and :func:`train`."""

from minirec.sft.config import SFTConfig


def main(**flags):
    """Supervised fine-tuning on next-SID prediction (and the alignment tasks). Flags: SFTConfig."""
    from minirec.sft.train import train

    train(SFTConfig.from_kwargs(**flags))


__all__ = ["SFTConfig", "main"]
