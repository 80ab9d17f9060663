"""Command-line flags from config dataclasses: one documented field per flag.

A field's documentation is the string literal written right after it in the class body
(``x: int = 1`` then ``\"\"\"What x does.\"\"\"``), read from the source with ``ast``; a
``# --- name ---`` comment above a group of fields names its section in ``--help``. So a new
documented field is a new flag, with help, and needs no other work.

Every value is converted and checked against the field's type before anything runs: the
command line gives strings, Python callers give values (a tuple for a ``str`` field is a
comma list), and a wrong one is a one-line :class:`MinirecError` naming flag, value and what
is accepted.
"""

import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
import shutil
import textwrap
import typing
from functools import cache

from minirec.errors import MinirecError

BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
SECTION = re.compile(r"^\s*#\s*-+\s*(.*?)\s*-*\s*$")
LAUNCHER_FLAGS = ("local_rank",)  # appended by the deepspeed launcher; its env vars say the same


@cache
def field_docs(cls) -> dict[str, tuple[str, str]]:
    """Field name -> (section, documentation), from the source of ``cls`` and its dataclass bases."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        sections = [(n, m.group(1)) for n, line in enumerate(source.splitlines(), 1) if (m := SECTION.match(line))]
        body = ast.parse(source).body[0].body
        for node, after in zip(body, body[1:] + [None]):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            doc = ""
            text = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else None
            if isinstance(text, str):
                doc = " ".join(inspect.cleandoc(text).split())
            section = next((title for n, title in reversed(sections) if n < node.lineno), "")
            docs[node.target.id] = (section, doc)
    return docs


def flag_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


@cache
def flag_types(cls) -> dict[str, tuple[type, bool]]:
    """Field name -> (base type, may be None), resolving string annotations and ``X | None``."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in flag_fields(cls):
        tp, args = hints[f.name], typing.get_args(hints[f.name])
        optional = type(None) in args
        if optional:
            tp = next(a for a in args if a is not type(None))
        if tp not in (bool, int, float, str):
            raise TypeError(f"{cls.__name__}.{f.name}: flags are bool, int, float or str, not {tp}")
        out[f.name] = (tp, optional)
    return out


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def convert(name: str, tp: type, value, optional: bool = False):
    """One flag value -> the field's type, or a one-line MinirecError."""
    if value is None and optional:
        return value

    def bad(accepted):
        return MinirecError(f"--{name} {value!r}: expected {accepted}")

    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in BOOLS:
            return BOOLS[value.strip().lower()]
        raise bad("a boolean: true/false, yes/no or 1/0 (any case)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad("an integer")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise bad("a finite number such as 3, 0.5 or 1e-3")
        return number
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)  # a comma list that a parser split (e.g. Fire)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise bad("text")


def _unknown(names, cls, command) -> MinirecError:
    known = [f.name for f in flag_fields(cls)]
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"--{name}" + (f" (did you mean --{close[0]}?)" if close else ""))
    return MinirecError(f"unknown flag(s) {', '.join(parts)}; see python {command} --help")


def config_from_flags(cls, flags: dict, command: str):
    """``cls(**flags)`` with every value converted and checked, then ``validate()`` if it has one."""
    types = flag_types(cls)
    unknown = [n for n in flags if n not in types]
    if unknown:
        raise _unknown(unknown, cls, command)
    # From Python, None for a field that cannot hold it means "not given" (the default applies).
    values = {n: convert(n, types[n][0], v, types[n][1]) for n, v in flags.items() if v is not None or types[n][1]}
    missing = [f.name for f in flag_fields(cls) if f.name not in values and default_of(f) is dataclasses.MISSING]
    if missing:
        raise MinirecError(f"missing required flag(s) --{', --'.join(missing)}; see python {command} --help")
    config = cls(**values)
    if hasattr(config, "validate"):
        config.validate()
    return config


def parse_argv(argv, cls, command: str, positional=()) -> dict[str, str] | None:
    """Command-line words -> {field: text}, or None when help is asked for.

    ``--name value``, ``--name=value``, a bare ``--name`` for a boolean (true); ``-`` in names
    may be ``_``; a flag given twice takes its last value. A value that starts with ``--``
    needs ``--name=value``. ``positional`` fields may also be given in order without their flag.
    """
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        return None
    types = flag_types(cls)
    flags, loose, unknown = {}, [], []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if not word.startswith("--"):
            loose.append(word)
            continue
        name, eq, value = word[2:].partition("=")
        name = name.replace("-", "_")
        if not eq:
            if i < len(argv) and not argv[i].startswith("--"):
                value, i = argv[i], i + 1
            elif types.get(name, (None,))[0] is bool:
                value = "true"
            elif name in types:
                raise MinirecError(f"--{name} needs a value; see python {command} --help")
        if name in LAUNCHER_FLAGS and name not in types:
            os.environ.setdefault(name.upper(), value)
            continue
        if name not in types:
            unknown.append(name)
        flags[name] = value  # the last one wins, so scripts' defaults can be overridden by extra flags
    if unknown:
        raise _unknown(unknown, cls, command)
    free = [p for p in positional if p not in flags]
    if len(loose) > len(free):
        raise MinirecError(f"unexpected argument(s) {' '.join(map(repr, loose[len(free):]))}; "
                           f"flags start with -- (see python {command} --help)")
    flags.update(zip(free, loose))
    return flags


def _shown(value) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "default: none"
    return f"default: {value!r}" if value == "" else f"default: {value}"


def format_help(cls, command: str, summary: str = "", positional=()) -> str:
    """``--help`` text: usage, the summary, then every flag with its type, documentation and default."""
    width = min(max(shutil.get_terminal_size((100, 20)).columns, 60), 120)
    docs, types = field_docs(cls), flag_types(cls)
    usage = " ".join(p.upper() for p in positional)
    lines = [f"usage: python {command} {usage + ' ' if usage else ''}[--FLAG VALUE ...]", ""]
    if summary:
        lines += [textwrap.fill(" ".join(summary.split()), width), ""]
    section = None
    for f in flag_fields(cls):
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


def changed(config, *names) -> list[str]:
    """Those of ``names`` whose value differs from the field's default (for "X only applies with Y")."""
    defaults = {f.name: default_of(f) for f in dataclasses.fields(config)}
    return [n for n in names if getattr(config, n) != defaults[n]]


def only_with(config, names, allowed: bool, what: str) -> None:
    """Those of ``names`` set away from their default, where they mean nothing (``allowed`` False),
    are an error "--x applies only {what}" rather than silently ignored."""
    names = changed(config, *names)
    if names and not allowed:
        raise MinirecError(f"--{', --'.join(names)} {'applies' if len(names) == 1 else 'apply'} only {what}")
