"""Stage configs from command-line flags: unknown flags are an error, values are validated."""

from dataclasses import fields

from minirec.errors import MinirecError


def config_from_flags(cls, flags: dict, command: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise MinirecError(f"unknown flag(s) --{', --'.join(unknown)}; see python {command} --help")
    config = cls(**flags)
    config.validate()
    return config
