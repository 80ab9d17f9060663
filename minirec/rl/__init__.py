"""The RL stage: :class:`RLConfig` (every flag, documented), rewards, and :func:`main` on TRL's GRPOTrainer."""

from minirec.rl.config import RLConfig


def main(config: RLConfig):
    """GRPO on an SFT run, with constrained beam-search rollouts and ranking rewards (TRL's GRPOTrainer).

    Writes a run dir like sft.py's to --output_dir.
    """
    from minirec.rl.train import train

    train(config)


__all__ = ["RLConfig", "main"]
