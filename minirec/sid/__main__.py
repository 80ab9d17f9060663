"""``python -m minirec.sid build ...``: build a SID index from item text (see minirec.sid.build)."""

from minirec.cli import run_cli
from minirec.sid.build import command

if __name__ == "__main__":
    run_cli({"build": command}, group="-m minirec.sid")
