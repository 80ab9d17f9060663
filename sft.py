"""Supervised fine-tuning: python sft.py --help lists every flag (minirec.sft.SFTConfig)."""

from minirec.cli import run_cli
from minirec.sft import command

if __name__ == "__main__":
    run_cli(command)
