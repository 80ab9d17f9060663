"""The command layer: ``fire.Fire`` reads the command line, the command's config dataclass checks it.

Fire is the entry point of every command. It splits the words into flags (``--name value``,
``--name=value``, a bare ``--name`` for true, ``-`` or ``_`` in names, the last of a repeated
flag wins), picks the sub-command of a group, and calls the command with keyword arguments.
It hands every value over as the text typed (``SetParseFn(str)``): its own value parsing would
make ``false`` a truthy string, ``rule,prefix`` a tuple and ``1.10`` the number 1.1. The
config dataclass then converts and checks the text (:mod:`minirec.config`), and every mistake,
from a misspelt flag to a bad data row, ends as one ``error: ...`` line on stderr with exit
code 2, before a model loads where the flags or files show it.

The command Fire calls takes ``*words, **flags``, so Fire passes on every word (it would
otherwise run the command and complain about leftovers afterwards); its signature, as Fire
sees it, lists the config's fields, so ``-- --help`` (Fire's own help) lists them too.
Library modules never import this one: it sits on top, in the command modules.
"""

import contextlib
import dataclasses
import difflib
import inspect
import logging
import os
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import fire

from minirec.config import config_from, default_of, field_docs, option_fields, option_types
from minirec.errors import MinirecError

HELP = ("help", "h")
LAUNCHER_FLAGS = ("local_rank",)  # appended by the deepspeed launcher; its env vars say the same


@dataclass(frozen=True)
class Command:
    """``python {prog}``: ``main(config)`` with ``config`` (a :class:`~minirec.config.Config`) from the flags."""

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


def _config(command: Command, words: tuple, flags: dict):
    """What Fire handed over -> the checked config, or a MinirecError."""
    types, hint = option_types(command.config), f"see python {command.prog} --help"
    for name in LAUNCHER_FLAGS:
        if name in flags and name not in types:
            os.environ.setdefault(name.upper(), flags.pop(name))
    for letter in [n for n in flags if len(n) == 1 and n not in types]:
        fields = [n for n in types if n.startswith(letter)]
        if len(fields) == 1:  # Fire's one-letter shortcut (its -- --help lists them): the only field with that initial
            flags[fields[0]] = flags.pop(letter)
        elif len(fields) > 1:
            raise MinirecError(f"-{letter} is ambiguous: --{', --'.join(fields)} start with it; spell the flag out "
                               f"({hint})")
    free = [p for p in command.positional if p not in flags]
    if len(words) > len(free):
        raise MinirecError(f"unexpected argument(s) {' '.join(map(repr, words[len(free):]))}; "
                           f"flags start with -- ({hint})")
    flags.update(zip(free, words))
    # Fire reads a bare --name as "True"; for a flag that is not a boolean that is a missing value
    # (the one trade-off: `--output_dir True` is refused the same way, a dir named True is unlikely).
    bare = [n for n, v in flags.items() if v == "True" and n in types and types[n][0] is not bool]
    if bare:
        raise MinirecError(f"--{bare[0]} needs a value ({hint})")
    # An empty value where the default is not empty (a path above all: --output_dir "" is the cwd)
    defaults = {f.name: default_of(f) for f in option_fields(command.config)}
    empty = [n for n, v in flags.items() if isinstance(v, str) and not v.strip() and n in types
             and types[n][0] is str and defaults[n] not in ("", None)]
    if empty:
        raise MinirecError(f"--{empty[0]} is empty; pass a value ({hint})")
    return config_from(command.config, flags, hint)


def _check_output(output) -> None:
    """What a run writes is a path of its own: not empty, not the cwd or a dir above it."""
    flag, path = output
    if not str(path).strip():
        raise MinirecError(f"{flag} is empty; pass a path")
    cwd = Path.cwd().resolve()
    if Path(path).resolve() in (cwd, *cwd.parents):
        raise MinirecError(f"{flag} {path}: the current directory or one above it; pass a dir of its own")


def _component(command: Command):
    """The function Fire calls for ``command``: help, or the checked config -> ``main``."""

    @fire.decorators.SetParseFn(str)  # every value as typed; the config converts it
    def call(*words, **flags):
        if any(h in flags for h in HELP):
            _print(command.help())
            return None
        config = _config(command, words, flags)
        output = config.output()
        if output:
            _check_output(output)
        config.check_paths()
        from minirec.output_lock import hold  # here, not at the top: it imports torch, which --help does not need

        with hold(output[1], output[0]) if output else contextlib.nullcontext():
            command.main(config)
        return None  # Fire would print a returned value

    # What Fire sees: the fields as keyword-only parameters (so a bare --flag or --noflag resolves
    # against them, and `-- --help` lists them with their docs), then *words/**flags for the rest.
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter(f.name, kw, default=None if default_of(f) is dataclasses.MISSING else default_of(f))
              for f in option_fields(command.config)]
    call.__signature__ = inspect.Signature([inspect.Parameter("words", inspect.Parameter.VAR_POSITIONAL), *params,
                                            inspect.Parameter("flags", inspect.Parameter.VAR_KEYWORD)])
    docs = field_docs(command.config)
    call.__doc__ = command.summary + "\n\nArgs:\n" + "".join(
        f"    {f.name}: {docs.get(f.name, ('', ''))[1]}\n" for f in option_fields(command.config))
    call.__name__ = command.prog.split()[-1]
    return call


def _group_help(commands: dict, group: str) -> str:
    width = max(map(len, commands))
    return "\n".join([f"usage: python {group} {{{','.join(commands)}}} [--FLAG VALUE ...]", ""]
                     + [f"  {name:<{width}}  {' '.join(c.summary.split())}" for name, c in commands.items()]
                     + ["", f"python {group} COMMAND --help lists a command's flags."])


def _check_group(commands: dict, group: str, argv: list) -> bool:
    """True when the group's own help is asked for; a missing or unknown command is an error."""
    if not argv or argv[0].startswith("-"):
        if argv[:1] in (["-h"], ["--help"]):
            return True
        raise MinirecError(f"name a command: python {group} {{{','.join(commands)}}} --help")
    if argv[0] not in commands:
        close = difflib.get_close_matches(argv[0], list(commands), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise MinirecError(f"unknown command {argv[0]!r}{hint}; choose one of {', '.join(commands)}")
    return False


def _check_no_flags(command: Command, argv: list) -> None:
    """Fire's ``--noFLAG`` (false) is for BOOL flags only: on another it would be the text "False"."""
    types = option_types(command.config)
    for word in argv:
        name = word[2:].split("=", 1)[0].replace("-", "_") if word.startswith("--no") else ""
        if name and name not in types and name[2:] in types and types[name[2:]][0] is not bool:
            raise MinirecError(f"unknown flag(s) --{name} (--noFLAG is only for BOOL flags; did you mean "
                               f"--{name[2:]} VALUE?); see python {command.prog} --help")


def run(command, argv=None, group: str = "") -> None:
    """Run a :class:`Command`, or a dict of sub-command name -> Command (``group``: their common prog), with Fire."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns at import that an optional hub-downloaded CPU kernel is missing;
    # its built-in CPU path is used instead, so the warning is noise here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if "-" in argv:  # Fire's separator: the command would run on the words before it only
            raise MinirecError("a lone '-' is not a value here; write --name=- to pass '-'")
        if "--" in argv and argv[argv.index("--") + 1:] not in (["--help"], ["-h"]):
            # Fire's flags separator: every word after it would be dropped and the command run without them
            raise MinirecError("a lone '--' is not accepted (only `-- --help`, Fire's own help); "
                               "remove it, or write --name=-- to pass '--'")
        if isinstance(command, dict):
            if _check_group(command, group, argv):
                _print(_group_help(command, group))
                return
            _check_no_flags(command[argv[0]], argv[1:])
            component, name = {n: _component(c) for n, c in command.items()}, f"python {group}"
        else:
            _check_no_flags(command, argv)
            component, name = _component(command), f"python {command.prog}"
        fire.Fire(component, command=argv, name=name)
    except MinirecError as e:
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)  # one line, always
        sys.exit(2)


def _shown(value) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "default: none"
    return f"default: {value!r}" if value == "" else f"default: {value}"


def format_help(cls, command: str, summary: str = "", positional=()) -> str:
    """``--help`` text: usage, the summary, then every flag with its type, documentation and default."""
    width = min(max(shutil.get_terminal_size((100, 20)).columns, 60), 120)
    docs, types = field_docs(cls), option_types(cls)
    usage = " ".join(p.upper() for p in positional)
    lines = [f"usage: python {command} {usage + ' ' if usage else ''}[--FLAG VALUE ...]", ""]
    if summary:
        lines += [textwrap.fill(" ".join(summary.split()), width), ""]
    section = None
    for f in option_fields(cls):
        sec, doc = docs.get(f.name, ("", ""))
        if sec != section:
            lines += [""] * (section is not None) + [f"{sec}:" if sec else "flags:"]
            section = sec
        head = f"  --{f.name} {types[f.name][0].__name__.upper()}"
        text = f"{doc} ({_shown(default_of(f))})".strip()
        body = textwrap.wrap(text, width - 32) or [""]
        if len(head) <= 30:
            lines.append(f"{head:<32}{body[0]}")
            body = body[1:]
        else:
            lines.append(head)
        lines += [" " * 32 + b for b in body]
    lines.append("")
    if any(tp is bool for tp, _ in types.values()):
        lines.append("BOOL values: true/false, yes/no, 1/0 (any case); a bare --FLAG means true.")
    if positional:
        lines.append(f"{', '.join(p.upper() for p in positional)} may also be given as --{', --'.join(positional)}.")
    return "\n".join(lines)
