"""Run a function as a Fire CLI; user errors become one line on stderr and exit code 2."""

import functools
import logging
import sys

import fire

from minirec.errors import MinirecError


def _quiet(fn):
    """Results are reported and written by ``fn`` itself; Fire would also dump its return value."""

    @functools.wraps(fn)  # keeps the signature and docstring, so --help lists the flags
    def command(*args, **kwargs):
        fn(*args, **kwargs)

    return command


def run_cli(fn) -> None:
    """``fn`` is a function, or a dict of sub-command name -> function."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns at import that an optional hub-downloaded CPU kernel is missing;
    # its built-in CPU path is used instead, so the warning is noise here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    target = {name: _quiet(f) for name, f in fn.items()} if isinstance(fn, dict) else _quiet(fn)
    try:
        fire.Fire(target)
    except MinirecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
