"""One run per output: a command holds what it writes (a run dir, a dataset dir, a report) while it runs.

The hold is an exclusive ``flock`` on a small file beside the output, ``.<name>.lock`` (beside,
not inside, so an output that must not exist before it is complete, like a merge's, can be held
too, and a run dir carries no lock when it is moved). The kernel drops the ``flock`` when the
holder dies, so a run killed with SIGKILL leaves a file but no hold, and the next run (a resume)
takes it over. The file names the holder (pid, command line, start time) for the error a
second process gets. Under a launcher only rank 0 holds, for the whole job.
"""

import fcntl
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from minirec.distributed import is_main_process
from minirec.errors import MinirecError


def lock_path(output) -> Path:
    output = Path(output).absolute()
    return output.with_name(f".{output.name}.lock")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"process {info['pid']} ({info['command'][:160]}, started {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"  # it has the lock but has not written its name yet


def _acquire(path: Path, flag: str, output) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MinirecError(f"{flag} {output} is in use by {_holder(path)}; wait for it to end or pass another "
                               "path") from None
        try:  # a holder that just ended removed the file we opened: lock the one now at the path
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _checked(output, flag: str) -> Path:
    """The lock file of ``output``, once ``output`` can be a path to write: not empty, not the root,
    and no file where one of its parent dirs would be."""
    if not str(output).strip():
        raise MinirecError(f"{flag} is empty; pass a path")
    full = Path(output).absolute()
    if full == Path(full.anchor):
        raise MinirecError(f"{flag} {output}: the root dir; pass a dir of its own")
    for parent in full.parents:
        if parent.exists():
            if not parent.is_dir():
                raise MinirecError(f"{flag} {output}: {parent} is not a directory")
            break
    return lock_path(output)


@contextmanager
def hold(output, flag: str = "--output_dir"):
    """Run the block while this process (rank 0 of a job) holds ``output``; another holder is a
    one-line MinirecError naming it."""
    if not is_main_process():
        yield
        return
    path = _checked(output, flag)
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, flag, output)
    except OSError as e:  # read-only, /proc, no permission, ...: one line naming the path
        _remove_empty(created)
        raise MinirecError(f"{flag} {output}: cannot take its lock {path} ({e.strerror or e})") from None
    except MinirecError:
        _remove_empty(created)
        raise
    try:
        me = {"pid": os.getpid(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        with _removed_on_sigterm(path):
            yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it, so nobody locks a file about to vanish
        os.close(fd)
        _remove_empty(created)  # a run that failed before writing leaves no dirs behind


@contextmanager
def _removed_on_sigterm(path: Path):
    """SIGTERM (kill, a scheduler's stop) removes the lock file, then takes its usual course (the
    handler before, or death by SIGTERM, exit status 143), so no stale file is left in a run dir or
    a dataset dir. SIGKILL cannot be caught: its file stays, without a hold (see the module doc)."""
    holder = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() == holder:  # not in a forked child (a DataLoader worker): the file is the parent's
            path.unlink(missing_ok=True)  # the flock is still ours until the process ends
        signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)


def _remove_empty(dirs) -> None:
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not empty (the run wrote there) or already gone
            break
