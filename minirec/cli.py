"""The one entry wrapper: flags -> a checked config -> ``main(config)``.

Flags are parsed here (see :mod:`minirec.flags`), not by Fire: Fire turns ``false`` into a
truthy string, ``rule,prefix`` into a tuple and ``1.10`` into ``1.1``; raw words converted
by the field's type do what the user typed. Every user mistake, from a bad flag to a bad
data row, ends as one ``error: ...`` line on stderr and exit code 2, before a model loads
where the mistake can be seen from the flags.
"""

import difflib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable

from minirec.errors import MinirecError
from minirec.flags import config_from_flags, format_help, parse_argv


@dataclass(frozen=True)
class Command:
    """``python {prog}``: ``main(config)`` with ``config`` (a dataclass) built from the flags."""

    prog: str  # what follows "python ": "sft.py", "-m minirec.merge"
    config: type
    main: Callable
    positional: tuple[str, ...] = ()  # fields that may be given in order without their flag

    @property
    def summary(self) -> str:
        return (self.main.__doc__ or "").strip().split("\n\n")[0]

    def help(self) -> str:
        return format_help(self.config, self.prog, self.summary, self.positional)


def _print(text: str) -> None:
    """Help goes to stdout; a reader that stops early (``| head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _pick(commands: dict, group: str, argv: list):
    if not argv or argv[0].startswith("-"):
        if argv[:1] in (["-h"], ["--help"]):
            return None, argv
        raise MinirecError(f"name a command: python {group} {{{','.join(commands)}}} --help")
    if argv[0] not in commands:
        close = difflib.get_close_matches(argv[0], list(commands), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise MinirecError(f"unknown command {argv[0]!r}{hint}; choose one of {', '.join(commands)}")
    return commands[argv[0]], argv[1:]


def _group_help(commands: dict, group: str) -> str:
    width = max(map(len, commands))
    return "\n".join([f"usage: python {group} {{{','.join(commands)}}} [--FLAG VALUE ...]", ""]
                     + [f"  {name:<{width}}  {' '.join(c.summary.split())}" for name, c in commands.items()]
                     + ["", f"python {group} COMMAND --help lists a command's flags."])


def run_cli(command, argv=None, group: str = "") -> None:
    """Run a :class:`Command`, or a dict of sub-command name -> Command (``group``: their common prog)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns at import that an optional hub-downloaded CPU kernel is missing;
    # its built-in CPU path is used instead, so the warning is noise here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if isinstance(command, dict):
            commands = command
            command, argv = _pick(commands, group, argv)
            if command is None:
                _print(_group_help(commands, group))
                return
        flags = parse_argv(argv, command.config, command.prog, command.positional)
        if flags is None:
            _print(command.help())
            return
        command.main(config_from_flags(command.config, flags, command.prog))
    except MinirecError as e:
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)  # one line, always
        sys.exit(2)
