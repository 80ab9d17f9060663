"""Config dataclasses: one documented field per option, values converted and checked on the way in.

Every stage's options are a dataclass deriving from :class:`Config`. A field's documentation is
the string literal written right after it in the class body (``x: int = 1`` then
``\"\"\"What x does.\"\"\"``), read from the source with ``ast``; a ``# --- name ---`` comment above a
group of fields names its section in ``--help``. So a new documented field is a new option, for
Python callers and for the command line alike.

:meth:`Config.from_kwargs` is the one way in: text from the command line (Fire hands over the
words as typed) and values from Python are converted to the field's type, checked, and a wrong
one is a one-line :class:`MinirecError` naming the option, the value and what is accepted.
``validate()`` then checks the values together; ``check_paths()`` checks the files they name,
and is called by the stage before anything loads. This module knows nothing about the command
line beyond the spelling ``--name`` in its messages.
"""

import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
import textwrap
import typing
from functools import cache

from minirec.errors import MinirecError

BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
SECTION = re.compile(r"^\s*#\s*-+\s*(.*?)\s*-*\s*$")


class Config:
    """Base of every config dataclass: conversion on the way in, then ``validate()``."""

    @classmethod
    def from_kwargs(cls, **values):
        """``cls(**values)`` with every value converted to its field's type and checked."""
        return config_from(cls, values)

    @classmethod
    def checked(cls, **values):
        """:meth:`from_kwargs`, then :meth:`check_paths`: a config ready to run (for Python callers)."""
        config = cls.from_kwargs(**values)
        config.check_paths()
        return config

    def validate(self) -> None:
        """Check the values together (no file access); raise MinirecError."""

    def check_paths(self) -> None:
        """Check the files and dirs the values name, before anything loads; raise MinirecError."""

    def output(self) -> tuple[str, str] | None:
        """(flag, path) of what a run writes: a command holds it while it runs (one run per output,
        :mod:`minirec.output_lock`). None: the run writes nothing."""
        return None


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


def option_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


@cache
def option_types(cls) -> dict[str, tuple[type, bool]]:
    """Field name -> (base type, may be None), resolving string annotations and ``X | None``."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in option_fields(cls):
        tp, args = hints[f.name], typing.get_args(hints[f.name])
        optional = type(None) in args
        if optional:
            tp = next(a for a in args if a is not type(None))
        if tp not in (bool, int, float, str):
            raise TypeError(f"{cls.__name__}.{f.name}: options are bool, int, float or str, not {tp}")
        out[f.name] = (tp, optional)
    return out


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def convert(name: str, tp: type, value, optional: bool = False):
    """One value (text as typed, or a Python value) -> the field's type, or a one-line MinirecError."""
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
        return ",".join(str(v) for v in value)  # a comma list given as a Python sequence
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise bad("text")


def unknown_names(cls, names, hint: str = "") -> MinirecError:
    """The error for options ``cls`` does not have, each with the closest one it has."""
    known = [f.name for f in option_fields(cls)]
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"--{name}" + (f" (did you mean --{close[0]}?)" if close else ""))
    return MinirecError(f"unknown flag(s) {', '.join(parts)}" + (f"; {hint}" if hint else ""))


def config_from(cls, values: dict, hint: str = ""):
    """``cls(**values)`` with every value converted and checked, then ``validate()``.

    ``hint`` ends the messages about unknown or missing options (the command line says where
    its help is)."""
    types = option_types(cls)
    unknown = [n for n in values if n not in types]
    if unknown:
        raise unknown_names(cls, unknown, hint)
    # From Python, None for a field that cannot hold it means "not given" (the default applies).
    converted = {n: convert(n, types[n][0], v, types[n][1]) for n, v in values.items()
                 if v is not None or types[n][1]}
    missing = [f.name for f in option_fields(cls) if f.name not in converted and default_of(f) is dataclasses.MISSING]
    if missing:
        raise MinirecError(f"missing required flag(s) --{', --'.join(missing)}" + (f"; {hint}" if hint else ""))
    config = cls(**converted)
    config.validate()
    return config


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
