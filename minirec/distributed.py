"""Processes and devices: which rank this process is, which device it uses, how a batch spreads.

One device rule for every stage (SFT, RL, evaluation, recommend, quantized loads): a process
uses the GPU of its local rank (``LOCAL_RANK``, which torchrun, the deepspeed launcher and
``accelerate launch`` all set, and which accelerate's own state reads), or the CPU when there
is no GPU. :func:`process_device` is that rule; nothing else picks a device.

DeepSpeed always initialises a ``torch.distributed`` process group. Under ``torchrun`` or the
``deepspeed`` launcher the rendezvous comes from environment variables; started as plain
``python sft.py --deepspeed cfg.json`` it has none, falls back to MPI discovery and dies on
a missing ``mpi4py``. :func:`single_process_group` sets what a one-process launch would.
"""

import os
import socket

import torch

from minirec.errors import MinirecError

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise MinirecError(f"{name}={value!r} in the environment is not an integer (set by a launcher?)")


def world_size() -> int:
    """Processes in the job (1 without a launcher)."""
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's rank in the job (0 without a launcher)."""
    return _env_int("RANK", 0)


def is_main_process() -> bool:
    """Rank 0 of the job (or no launcher): the process that prints and writes."""
    return rank() == 0


def local_rank() -> int:
    """This process's index on its machine (0 without a launcher)."""
    return _env_int("LOCAL_RANK", 0)


def process_device() -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` when CUDA is there, else the CPU.

    A launcher that gives each process one visible GPU (``CUDA_VISIBLE_DEVICES`` per rank, as
    SLURM setups do) leaves a single device, which is then this process's whatever its rank.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count, rank = torch.cuda.device_count(), local_rank()
    if count == 1:
        return torch.device("cuda", 0)
    if rank >= count:
        raise MinirecError(f"LOCAL_RANK {rank} but only {count} GPUs are visible: start at most {count} processes "
                           "per machine (--nproc_per_node / NPROC)")
    return torch.device("cuda", rank)


def quantized_device_map() -> dict:
    """``device_map`` for a bitsandbytes load: the whole model on this process's device."""
    device = process_device()
    return {"": device.index if device.type == "cuda" else "cpu"}


def to_process_device(model):
    """Move a model to this process's device; a quantized model was loaded there and cannot move."""
    if not getattr(model, "is_quantized", False):
        model.to(process_device())
    return model


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


def batch_layout(global_batch: int, max_micro: int, world: int, multiple_of: int = 1,
                 what: str = "--batch_size") -> tuple[int, int]:
    """(micro, accumulation) with ``micro x accumulation x world == global_batch`` exactly.

    The global batch is what the recipe means, so it stays the same for any process count: the
    fewest accumulation steps whose micro batch fits ``max_micro``, and the micro batch is a
    multiple of ``multiple_of`` (GRPO: whole groups of completions on each rank).
    """
    for accumulation in range(max(1, -(-global_batch // (max_micro * world))), global_batch // world + 1):
        micro, left = divmod(global_batch, world * accumulation)
        if not left and micro % multiple_of == 0:
            return micro, accumulation
    unit = f" (a multiple of {multiple_of})" if multiple_of > 1 else ""
    raise MinirecError(f"{what} {global_batch} does not split into {world} process{'es' if world > 1 else ''} "
                       f"x accumulation steps x a micro batch of at most {max_micro}{unit}; "
                       "change the batch or the process count")


def batch_line(micro: int, accumulation: int, world: int, unit: str = "rows") -> str:
    """The line every training prints at start: how the global batch is made."""
    return (f"global batch {micro * accumulation * world} {unit} = micro {micro} x accumulation {accumulation} "
            f"x {world} process{'es' if world > 1 else ''}")


def map_sharded(fn, items: list) -> list:
    """``fn(items)`` (a list -> a list as long) with the items split across the job's processes:
    each runs ``fn`` on every world_size-th item, and every process gets all results, in order.
    So N processes evaluate N times faster, not N times. Without a process group, plain ``fn``.

    Every process must call it (the gather is a collective), and ``fn``'s forward passes must
    not need the others (under ZeRO-3 each forward gathers weights from every process: there,
    decode all items on every process instead).
    """
    dist = torch.distributed
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return fn(items)
    me = dist.get_rank()
    mine = items[me::world]
    parts = [None] * world
    dist.all_gather_object(parts, fn(mine) if mine else [])
    results = [None] * len(items)
    for r, part in enumerate(parts):
        results[r::world] = part
    return results
