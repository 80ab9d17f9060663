"""DeepSpeed configs: found (``--deepspeed``, or the one ``accelerate launch`` names), read and
checked before any model loads.

DeepSpeed itself ignores a top-level key it does not know, so a typo (``zero_optimisation``)
would silently train without ZeRO. The ``zero_optimization`` section is checked by DeepSpeed's
own pydantic model (which forbids unknown fields); top-level keys against the keys DeepSpeed
reads (the list of its config documentation; DeepSpeed has no schema for them). A stage
the training mode cannot use is refused here too: ZeRO-3 partitions parameters, and
bitsandbytes' 4-bit/8-bit weights cannot be partitioned.
"""

import difflib
import importlib.util
import json
import os
from pathlib import Path

from minirec.errors import MinirecError
from minirec.io import read_text

# Top-level keys of https://www.deepspeed.ai/docs/config-json/ (DeepSpeed 0.19).
DOCUMENTED_KEYS = frozenset("""
train_batch_size train_micro_batch_size_per_gpu gradient_accumulation_steps optimizer scheduler
communication_data_type prescale_gradients gradient_predivide_factor sparse_gradients fp16 bf16 bfloat16
amp gradient_clipping zero_optimization zero_allow_untested_optimizer zero_force_ds_cpu_optimizer aio
activation_checkpointing flops_profiler comms_logger autotuning steps_per_print wall_clock_breakdown dump_state
memory_breakdown tensorboard wandb csv_monitor comet elasticity checkpoint data_types data_efficiency
curriculum_learning compression_training sparse_attention pipeline progressive_layer_drop eigenvalue
quantize_training nebula hybrid_engine compile torch_autocast timers dataloader_drop_last
load_universal_checkpoint use_node_local_storage weight_quantization graph_harvesting
seq_parallel_communication_data_type sequence_parallel_size disable_allgather
use_data_before_expert_parallelism
""".split())


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


def check_deepspeed(path, quantization=None, rl=False) -> dict:
    """Read and check a DeepSpeed config; returns it. Every problem is a one-line MinirecError.

    ``rl``: GRPO keeps the best policy's weights and saves from rank 0, which partitioned
    (ZeRO-3) weights do not allow; RL runs on ZeRO-2 (weights replicated, states sharded).
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
    for key in config:
        if key not in DOCUMENTED_KEYS:
            close = difflib.get_close_matches(key, sorted(DOCUMENTED_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise MinirecError(f"--deepspeed {path}: unknown key {key!r} (DeepSpeed would ignore it){hint}")
    stage = _check_zero_section(path, config.get("zero_optimization", {}))
    if stage == 3 and quantization:
        raise MinirecError(f"--deepspeed {path}: ZeRO-3 partitions the weights, which a {quantization} "
                           "(bitsandbytes) base cannot be; use configs/deepspeed/zero2.json for QLoRA/8-bit")
    if stage == 3 and rl:
        raise MinirecError(f"--deepspeed {path}: rl.py runs on ZeRO-2 (configs/deepspeed/zero2.json or "
                           "zero2_offload.json), not ZeRO-3; RL a large model with --use_lora or --use_qlora")
    return config
