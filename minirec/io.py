"""File I/O for every stage: atomic writes (a reader never sees a half-written file) and UTF-8 reads
with one-line errors."""

import codecs
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from minirec.errors import MinirecError


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path, rows) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_text(path) -> str:
    """A UTF-8 text file (a leading byte-order mark dropped). Other bytes are a one-line
    MinirecError naming the file and line, not a UnicodeDecodeError traceback."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    return text.removeprefix("\ufeff")


def utf8_error(path, chunk: int = 1 << 20) -> MinirecError:
    """The error for the first byte of ``path`` that is not UTF-8 (file, line, column), found by
    streaming the file, so readers that read it their own way can name the place too."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, column = 1, 1
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                good = e.object[: e.start]  # starts with the (newline-free) bytes held from the last block
                if b"\n" in good:
                    line, column = line + good.count(b"\n"), len(good) - good.rfind(b"\n")
                else:
                    column += len(good) - (len(e.object) - len(block))
                return MinirecError(f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at column "
                                    f"{column}); save the file as UTF-8")
            if not block:
                return MinirecError(f"{path}: cannot be read as UTF-8 text; save the file as UTF-8")
            if b"\n" in block:
                line, column = line + block.count(b"\n"), len(block) - block.rfind(b"\n")
            else:
                column += len(block)
