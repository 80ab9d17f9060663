"""``run.json``: what makes a run's output dir self-describing, and a dir that stands alone.

Every later command (RL, evaluation, merge, recommend) needs only ``--model_path``: the
base model, the SID index it was trained with, the prompt template and the training mode
are all read from here. The run also carries its catalogue (``catalogue/index.json`` and the
items' titles), so recommending needs nothing outside it, and records its dataset dir as an
absolute path (checked against the index at use), so evaluation and RL work from any
directory and after the run dir moves.
"""

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from minirec.errors import MinirecError
from minirec.io import atomic_path, read_text, write_json

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CATALOGUE_DIR = "catalogue"  # inside a run: the index.json and item titles it was trained with
MODES = ("lora", "qlora", "full", "freeze")


@dataclass
class RunInfo:
    base_model: str  # as the user named it: "tiny", "smollm2-135m" or a path
    base_model_path: str  # resolved checkpoint dir; relative paths are relative to the run dir
    mode: str  # one of MODES
    template: str
    max_history: int
    tasks: list
    data_dir: str  # absolute since runs carry their catalogue; older runs hold the path as given
    sid_index_sha256: str
    quantization: str | None = None  # "4bit" / "8bit" when the base was loaded quantized
    stage: str = "sft"
    config: dict = field(default_factory=dict)  # the full stage config, for the record

    @property
    def is_adapter(self) -> bool:
        return self.mode != "full"

    def resolve_base(self, run_dir) -> Path:
        base = Path(self.base_model_path)
        return base if base.is_absolute() else Path(run_dir) / base

    def write(self, run_dir, catalogue_from=None) -> None:
        """Copy the catalogue into the run (from ``catalogue_from``, default the data dir), then write
        run.json, last, with the data dir made absolute."""
        copy_catalogue(Path(catalogue_from or self.data_dir), Path(run_dir) / CATALOGUE_DIR, self.sid_index_sha256)
        info = replace(self, data_dir=str(Path(self.data_dir).resolve()))
        write_json(Path(run_dir) / RUN_FILE, asdict(info))

    def catalogue_dir(self, run_dir) -> Path:
        """Where this run's catalogue is: its own copy, or (older runs) the data dir."""
        own = Path(run_dir) / CATALOGUE_DIR
        return own if (own / "index.json").is_file() else Path(self.data_dir)

    @classmethod
    def read(cls, run_dir) -> "RunInfo":
        path = Path(run_dir) / RUN_FILE
        if not Path(run_dir).is_dir():
            raise MinirecError(f"--model_path {run_dir}: no such directory; pass a run dir written by sft.py or rl.py")
        if not path.is_file():
            unfinished = any(Path(run_dir).glob("checkpoint-*"))
            raise MinirecError(
                f"{run_dir}: no {RUN_FILE}; " + ("an unfinished run (resume it with --resume_from_checkpoint last)"
                                                 if unfinished else "not a run dir written by sft.py or rl.py")
            )
        try:
            data = json.loads(read_text(path))
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise MinirecError(f"{path}: unreadable run description ({e}); re-run the stage that wrote it")

    def check_index(self, catalogue) -> None:
        """Refuse a catalogue whose SIDs differ from the ones this run was trained with."""
        if self.sid_index_sha256 != catalogue.index_sha256:
            raise MinirecError(
                f"the SID index differs from the one this run was trained with ({self.data_dir}); "
                "evaluate with the same index.json or retrain"
            )


def check_merge_weights(merge_weights: bool, run: RunInfo, model_path) -> None:
    """--merge_weights True on a full run would be ignored (nothing to merge): an error, before the model
    loads (evaluate.py, minirec.recommend)."""
    if merge_weights and not run.is_adapter:
        raise MinirecError(f"--merge_weights True: {model_path} is a full run: it has no adapter to merge; "
                           "drop the flag")


def copy_catalogue(source: Path, dest: Path, sha256: str) -> None:
    """``source``'s index.json (which must be the run's, by hash) and its items' titles -> ``dest``."""
    from minirec.sid.catalogue import load_items

    index = source / "index.json"
    if not index.is_file():  # only an older run, merged where its data dir is out of reach
        log.warning("%s: no index.json to copy into the run; it will need --data_dir", source)
        return
    data = index.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise MinirecError(f"{index} changed during the run (its SID index is not the one trained with); "
                           "restore it and run again")
    if (source / "item.json").is_file():
        ids = json.loads(data)
        titles = {i: {"title": m.get("title", "")} for i, m in load_items(source / "item.json").items() if i in ids}
        write_json(dest / "item.json", titles)
    with atomic_path(dest / "index.json") as tmp:
        tmp.write_bytes(data)


def check_output_dir(path) -> None:
    """A stage's --output_dir must not be a file or a finished run: resuming or retraining into a
    finished run would overwrite it, so it is never touched."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MinirecError(f"--output_dir {path} is a file; pass a directory")
    if (path / RUN_FILE).exists():
        raise MinirecError(f"--output_dir {path} already holds a finished run ({RUN_FILE}); "
                           "pass another dir or delete it")


def relative_to_run(path, run_dir) -> str:
    """Store paths inside the run dir relatively, so the dir can be moved as a whole."""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    try:
        return str(path.relative_to(run_dir))
    except ValueError:
        return os.fspath(path)
