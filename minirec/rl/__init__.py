"""The RL stage: :class:`RLConfig` (every flag, documented), rewards, and :func:`train` on TRL's GRPOTrainer."""

from minirec.rl.config import RLConfig


def main(**flags):
    """GRPO with constrained beam rollouts on an SFT run. Flags: RLConfig."""
    from minirec.rl.train import train

    train(RLConfig.from_kwargs(**flags))


__all__ = ["RLConfig", "main"]
