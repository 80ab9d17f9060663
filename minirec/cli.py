"""Run a function as a Fire CLI; user errors become one line on stderr and exit code 2."""

import logging
import sys

import fire

from minirec.errors import MinirecError


def run_cli(fn) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns at import that an optional hub-downloaded CPU kernel is missing;
    # its built-in CPU path is used instead, so the warning is noise here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        fire.Fire(fn)
    except MinirecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
