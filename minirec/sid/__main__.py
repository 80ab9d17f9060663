"""``python -m minirec.sid build ...``: build a SID index from item text (see minirec.sid.build)."""

from minirec.cli import Command, run
from minirec.sid.build import BuildConfig, main

if __name__ == "__main__":
    run({"build": Command("-m minirec.sid build", BuildConfig, main)}, group="-m minirec.sid")
