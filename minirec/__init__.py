"""minirec: generative recommendation with semantic IDs, SFT then RL, on any causal LM."""

__version__ = "0.1.0"
