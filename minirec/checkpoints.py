"""Resuming: which checkpoint ``--resume_from_checkpoint`` names, and whether all of it loads.

sft.py and rl.py resolve the flag here, before anything loads or is written. A checkpoint with a
file that cannot be read (a save cut short by a kill or a full disk: a truncated
model.safetensors or adapter, optimizer.pt, trainer_state.json, ...) is refused in one line
naming the file and the newest intact checkpoint to pass instead. There is no silent fall-back
to an older checkpoint: that would quietly train some steps twice.

The checks read headers and structure, not every tensor, so a multi-GB checkpoint is checked in
well under a second: safetensors' header (which covers the file's length), JSON in full, and
torch's zip archives (optimizer.pt, scheduler.pt, rng_state*.pth, DeepSpeed's global_step*
files) down to their central directory, each record's extent and, in full, their pickles.
"""

import json
import re
import zipfile
from pathlib import Path

from minirec.errors import MinirecError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it is unfinished
NOT_LOADED = {"training_args.bin"}  # the Trainer never reads it back when it resumes


def checkpoints(out) -> list[Path]:
    """The ``checkpoint-N`` dirs of ``out``, newest (highest N) first; none when ``out`` does not exist."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if CHECKPOINT.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: -int(CHECKPOINT.match(p.name).group(1)))


def _safetensors_problem(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:  # checks that the header covers the whole file
            f.keys()
    except (SafetensorError, OSError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def _archive_problem(path: Path) -> str | None:
    """A torch.save zip: its directory, every record inside the file, the pickles readable."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    return f"record {info.filename} runs past the end of the file"
                if info.filename.endswith(".pkl"):
                    archive.read(info)  # checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"not a readable torch archive ({e})"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"not valid JSON ({e})"
    return None


def _sharded_problem(path: Path) -> str | None:
    """A sharded weights index: every shard it names must be there."""
    problem = _json_problem(path)
    if problem:
        return problem
    shards = set(json.loads(path.read_text(encoding="utf-8")).get("weight_map", {}).values())
    missing = sorted(s for s in shards if not (path.parent / s).is_file())
    return f"names {len(missing)} missing shard(s), first {missing[0]}" if missing else None


def checkpoint_problem(ckpt) -> tuple[Path, str] | None:
    """(file, why) for the first file of ``ckpt`` that would not load on resume; None when all do."""
    ckpt = Path(ckpt)
    if not (ckpt / TRAINER_STATE).is_file():
        return ckpt / TRAINER_STATE, "missing: the save was cut short"
    for path in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        if path.name in NOT_LOADED:
            continue
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
        elif path.name.endswith(".index.json"):
            problem = _sharded_problem(path)
        elif path.suffix == ".json":
            problem = _json_problem(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            problem = _archive_problem(path)
        else:  # tokenizer vocabularies, DeepSpeed's "latest" and its scripts: text the Trainer does not parse
            problem = None
        if problem:
            return path, problem
    return None


def resolve_resume(value: str, out) -> str | None:
    """The checkpoint dir ``--resume_from_checkpoint value`` names ("last": the newest of ``out``), checked
    to load in full; None without the flag. A damaged one is a MinirecError naming the newest intact one."""
    if not value:
        return None
    out = Path(out)
    if value == "last":
        found = checkpoints(out)
        if not found:
            raise MinirecError(f"--resume_from_checkpoint last: no checkpoint-* dir in {out}")
        chosen = found[0]
    else:
        chosen = Path(value)
        if not chosen.is_dir():
            raise MinirecError(f"--resume_from_checkpoint {value}: no such checkpoint dir")
    problem = checkpoint_problem(chosen)
    if problem is None:
        return str(chosen)
    path, why = problem
    intact = next((c for c in checkpoints(out) if c.resolve() != chosen.resolve() and checkpoint_problem(c) is None),
                  None)
    fix = (f"pass --resume_from_checkpoint {intact} instead (the newest intact checkpoint)" if intact else
           f"no checkpoint in {out} is intact: run without --resume_from_checkpoint to start again")
    raise MinirecError(f"--resume_from_checkpoint {value}: {path} is damaged ({why}); {fix}")
