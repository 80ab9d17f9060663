"""RL after SFT: python rl.py --help lists every flag (minirec.rl.RLConfig)."""

from minirec.cli import run_cli
from minirec.rl import command

if __name__ == "__main__":
    run_cli(command)
