"""Offline evaluation: python evaluate.py --help lists every flag (minirec.evaluate.EvalConfig)."""

from minirec.cli import Command, run
from minirec.evaluate import EvalConfig, main

if __name__ == "__main__":
    run(Command("evaluate.py", EvalConfig, main))
