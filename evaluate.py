"""Offline evaluation: python evaluate.py --help lists every flag (minirec.evaluate.EvalConfig)."""

from minirec.cli import run_cli
from minirec.evaluate import command

if __name__ == "__main__":
    run_cli(command)
