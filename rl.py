"""RL after SFT: python rl.py --help lists every flag (minirec.rl.RLConfig)."""

from minirec.cli import Command, run
from minirec.rl import RLConfig, main

if __name__ == "__main__":
    run(Command("rl.py", RLConfig, main))
