"""The SFT stage: :class:`SFTConfig` (every flag, documented) and :func:`main`."""

from minirec.sft.config import SFTConfig


def main(config: SFTConfig):
    """Supervised fine-tuning: next-SID prediction (and the alignment tasks) on a dataset dir.

    Writes a self-describing run dir (weights or adapter, tokenizer, run.json) to --output_dir.
    """
    from minirec.sft.train import train

    train(config)


__all__ = ["SFTConfig", "main"]
