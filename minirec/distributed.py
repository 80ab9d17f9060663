"""DeepSpeed and process groups, shared by the trainers.

DeepSpeed always initialises a ``torch.distributed`` process group. Under ``torchrun`` or the
``deepspeed`` launcher the rendezvous comes from environment variables; started as plain
``python sft.py --deepspeed cfg.json`` it has none, falls back to MPI discovery and dies on
a missing ``mpi4py``. :func:`single_process_group` sets what a one-process launch would.
"""

import importlib.util
import json
import os
import socket
from pathlib import Path

from minirec.errors import MinirecError
from minirec.io import read_text

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def check_deepspeed(path) -> None:
    """A readable DeepSpeed config JSON, and DeepSpeed installed: checked before any model loads."""
    path = Path(path)
    if not path.is_file():
        raise MinirecError(f"--deepspeed {path}: no such config file (see configs/deepspeed/)")
    try:
        config = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise MinirecError(f"--deepspeed {path}: not valid JSON ({e})")
    if not isinstance(config, dict):
        raise MinirecError(f"--deepspeed {path}: expected a JSON object such as configs/deepspeed/zero2.json")
    if importlib.util.find_spec("deepspeed") is None:
        raise MinirecError("--deepspeed needs the deepspeed package: DS_BUILD_OPS=0 pip install deepspeed")


def single_process_group() -> bool:
    """Without a launcher, describe a one-process group (rank 0 of 1, a free local port); True if it did."""
    if any(v in os.environ for v in LAUNCHER_VARS):
        return False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    return True
