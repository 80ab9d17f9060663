"""``python -m minirec.baselines {popularity,recent_popular,sasrec} --data_dir ... [--split valid,test]``."""

from minirec.baselines.commands import COMMANDS
from minirec.cli import run_cli

if __name__ == "__main__":
    run_cli(COMMANDS, group="-m minirec.baselines")
