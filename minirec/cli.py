"""Run a function as a Fire CLI; user errors become one line on stderr and exit code 2."""

import inspect
import logging
import sys

import fire

from minirec.errors import MinirecError


def run_cli(fn) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns at import that an optional hub-downloaded CPU kernel is missing;
    # its built-in CPU path is used instead, so the warning is noise here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    def command(*args, **kwargs):
        fn(*args, **kwargs)  # results are reported and written by fn; Fire would dump the return value

    command.__doc__, command.__name__ = fn.__doc__, fn.__name__
    command.__signature__ = inspect.signature(fn)
    try:
        fire.Fire(command)
    except MinirecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
