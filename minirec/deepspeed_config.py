"""DeepSpeed configs: found (``--deepspeed``, or the one ``accelerate launch`` names), read and
checked before any model loads.

DeepSpeed itself ignores a top-level key it does not know, so a typo (``zero_optimisation``)
would silently train without ZeRO. The ``zero_optimization`` section is checked by DeepSpeed's
own pydantic model (which forbids unknown fields); top-level keys against the keys the installed
DeepSpeed reads (it has no schema for them: :func:`deepspeed_keys` records them). A stage
the training mode cannot use is refused here too: ZeRO-3 partitions parameters, and
bitsandbytes' 4-bit/8-bit weights cannot be partitioned.
"""

import difflib
import functools
import importlib.util
import json
import os
from pathlib import Path

from minirec.errors import MinirecError
from minirec.io import read_text

# Read only once a process group exists (DeepSpeedConfig.__init__), so the recording below misses it.
_READ_UNDER_A_GROUP = frozenset({"sequence_parallel_size"})


@functools.cache
def deepspeed_keys() -> tuple[frozenset, dict]:
    """(top-level keys the installed DeepSpeed reads, {removed key: DeepSpeed's reason}).

    Recorded, not listed: DeepSpeed's own ``DeepSpeedConfig`` parses a config whose lookups
    (``get``, ``in``, ``[]``, ``keys()``) note every key asked for, so the set follows DeepSpeed
    releases instead of drifting from them.
    """
    from deepspeed.runtime import config as ds_config

    asked = set()

    class _Keys:
        def __init__(self, keys):
            self.keys = keys

        def __contains__(self, key):
            asked.add(key)
            return key in self.keys

        def __iter__(self):
            return iter(self.keys)

    class _Recording(dict):
        def get(self, key, default=None):
            asked.add(key)
            return super().get(key, default)

        def __contains__(self, key):
            asked.add(key)
            return super().__contains__(key)

        def __getitem__(self, key):
            asked.add(key)
            return super().__getitem__(key)

        def keys(self):
            return _Keys(list(super().keys()))

    ds_config.DeepSpeedConfig(_Recording(train_batch_size=1))
    removed = dict(getattr(ds_config, "_REMOVED_TOP_LEVEL_CONFIG_KEYS", {}))  # DeepSpeed refuses these itself
    return frozenset((asked | _READ_UNDER_A_GROUP) - set(removed)), removed


def config_path(flag: str) -> str:
    """The ``--deepspeed`` file, or the one ``accelerate launch --config_file X.yaml`` passes on ("" = none)."""
    if flag:
        return flag
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").strip().lower() in ("1", "true", "yes"):
        return os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
    return ""


def _check_zero_section(path, section) -> int:
    from pydantic import ValidationError
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    if not isinstance(section, dict):
        raise MinirecError(f"--deepspeed {path}: zero_optimization must be an object such as {{\"stage\": 2}}")
    concrete = {k: v for k, v in section.items() if v != "auto"}  # the HF integration fills "auto" later
    try:
        return int(DeepSpeedZeroConfig(**concrete).stage)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise MinirecError(f"--deepspeed {path}: zero_optimization.{where}: {err['msg']}")


def _check_optimizer_section(path, section, weight_decay) -> None:
    """An ``optimizer`` section makes transformers hand DeepSpeed one group of every trainable
    weight, so its weight decay would reach the embedding and SID rows minirec exempts."""
    if not isinstance(section, dict):
        return
    params = section.get("params") or {}
    if not isinstance(params, dict):
        raise MinirecError(f"--deepspeed {path}: optimizer.params must be an object such as {{\"lr\": \"auto\"}}")
    decay = params.get("weight_decay", "auto")
    if decay != "auto" and (isinstance(decay, bool) or not isinstance(decay, (int, float))):
        # DeepSpeed hands it to the optimizer as it is, which fails on a string mid-launch.
        raise MinirecError(f"--deepspeed {path}: optimizer.params.weight_decay must be a number or \"auto\", "
                           f"not {decay!r}")
    decay = weight_decay if decay == "auto" else decay
    if decay > 0:
        raise MinirecError(f"--deepspeed {path}: its optimizer section would decay the embedding and SID rows too "
                           f"(weight decay {decay}); remove the section (the Trainer's AdamW, which exempts them, "
                           "then runs as DeepSpeed's CPU Adam under offload) or pass --weight_decay 0")


def check_deepspeed(path, quantization=None, rl=False, weight_decay=0.0) -> dict:
    """Read and check a DeepSpeed config; returns it. Every problem is a one-line MinirecError.

    ``rl``: GRPO keeps the best policy's weights and saves from rank 0, which partitioned
    (ZeRO-3) weights do not allow; RL runs on ZeRO-2 (weights replicated, states sharded).
    ``weight_decay``: the run's ``--weight_decay``, which an ``optimizer`` section's "auto" takes.
    """
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
    known, removed = deepspeed_keys()
    for key in config:
        if key in removed:
            raise MinirecError(f"--deepspeed {path}: {key!r}: {removed[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise MinirecError(f"--deepspeed {path}: unknown key {key!r} (DeepSpeed would ignore it){hint}")
    stage = _check_zero_section(path, config.get("zero_optimization", {}))
    _check_optimizer_section(path, config.get("optimizer"), weight_decay)
    if stage == 3 and quantization:
        raise MinirecError(f"--deepspeed {path}: ZeRO-3 partitions the weights, which a {quantization} "
                           "(bitsandbytes) base cannot be; use configs/deepspeed/zero2.json for QLoRA/8-bit")
    if stage == 3 and rl:
        raise MinirecError(f"--deepspeed {path}: rl.py runs on ZeRO-2 (configs/deepspeed/zero2.json or "
                           "zero2_offload.json), not ZeRO-3; RL a large model with --use_lora or --use_qlora")
    return config
