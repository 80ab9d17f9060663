"""One exception type for every mistake a user can make.

Entry points catch :class:`MinirecError` and print its message as a single line, so every
message must say what is wrong, where, and how to fix it.
"""


class MinirecError(Exception):
    """A user-facing error: bad input, bad flag, missing file. Never a bug in minirec."""
