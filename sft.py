"""Supervised fine-tuning: python sft.py --help lists every flag (minirec.sft.SFTConfig)."""

from minirec.cli import Command, run
from minirec.sft import SFTConfig, main

if __name__ == "__main__":
    run(Command("sft.py", SFTConfig, main))
