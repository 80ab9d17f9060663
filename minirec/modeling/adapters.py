"""Training modes: LoRA, QLoRA, full fine-tuning, and "freeze the LLM, train the SID rows".

Every adapter mode is plain PEFT, so an output dir loads with ``PeftModel.from_pretrained``.
The new SID token rows are trained through PEFT's trainable tokens (only those rows of the
embedding, and of an untied LM head, get a delta), which is what ``freeze`` trains alone.
Both LoRA's dropout and the trainable SID rows then run through :mod:`minirec.modeling.lean`:
the same results and the same files, with less memory kept for backward.
"""

import logging

import torch
from torch import nn

from minirec.errors import MinirecError

log = logging.getLogger(__name__)


def _module_name(model, module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise MinirecError("could not locate the embedding module by name in this model")


def linear_module_names(model) -> list[str]:
    """Leaf names of every Linear layer (bitsandbytes layers subclass nn.Linear), minus the LM head."""
    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}
    return sorted(names)


def resolve_target_modules(model, spec) -> list[str]:
    """``all`` -> every Linear layer found in the model; ``qkv`` -> the attention projections;
    otherwise a comma-separated list (or Python list) of layer names, each checked to exist."""
    available = linear_module_names(model)
    if spec in (None, "", "all"):
        return available
    if spec == "qkv":
        wanted = [n for n in available if n in ("q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value")]
        if not wanted:
            raise MinirecError(f"--lora_target_modules qkv: no q/k/v projections here; available: {', '.join(available)}")
        return wanted
    wanted = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise MinirecError(
            f"--lora_target_modules: no Linear layer named {', '.join(unknown)} in this model; "
            f"available: {', '.join(available)} (or use all / qkv)"
        )
    return wanted


def embeddings_are_tied(model) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def sid_row_targets(model, token_ids) -> dict:
    """Which modules get trainable SID rows: the input embedding, plus an untied LM head."""
    targets = {_module_name(model, model.get_input_embeddings()): list(token_ids)}
    if not embeddings_are_tied(model) and model.get_output_embeddings() is not None:
        targets[_module_name(model, model.get_output_embeddings())] = list(token_ids)
    return targets


def wrap_model(model, mode, sid_token_ids, lora_r=8, lora_alpha=16, lora_dropout=0.05,
               lora_target_modules="all", use_rslora=False, use_dora=False, gradient_checkpointing=False,
               lean=True):
    """Return the model ready to train in ``mode`` (a PeftModel for every mode but ``full``).

    ``lean=False`` keeps PEFT's own forwards (what :mod:`minirec.modeling.lean` replaces), for
    comparisons.
    """
    from peft import LoraConfig, TrainableTokensConfig, get_peft_model, prepare_model_for_kbit_training

    from minirec.modeling.lean import lean_peft_model

    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    targets = sid_row_targets(model, sid_token_ids)
    if mode == "freeze":
        config = TrainableTokensConfig(target_modules=list(targets), token_indices=list(sid_token_ids))
        model = get_peft_model(model, config)
        if lean:
            _log_lean(lean_peft_model(model))
        return model
    if mode not in ("lora", "qlora"):
        raise MinirecError(f"unknown mode {mode!r}")
    if getattr(model, "is_quantized", False):
        # Casts norms to fp32 and enables input grads, so LoRA trains on a frozen k-bit base.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=resolve_target_modules(model, lora_target_modules),
        use_rslora=use_rslora,
        use_dora=use_dora,
        trainable_token_indices=targets,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    if lean:
        _log_lean(lean_peft_model(model))
    return model


def _log_lean(counts) -> None:
    """Say which layers run minirec's lean forwards; on a GPU under autocast, LoRA layers fall back
    to PEFT's per call (minirec/modeling/lean.py says which paths apply where)."""
    log.info("lean PEFT forwards: %d LoRA layers (CPU, matching dtypes; else PEFT's), %d trainable-token layers",
             counts["lora"], counts["trainable_tokens"])


def upcast_trainable(model, under_deepspeed: bool) -> int:
    """Trainable bf16/fp16 weights -> fp32, the master weights of mixed precision; returns how many.

    The Trainer's ``bf16=True`` autocasts the forward pass but leaves AdamW updating each weight
    in its own dtype: a bf16 weight drops every update below its bf16 spacing (1/256 of its size;
    at RL's learning rates, most updates). Frozen weights keep their dtype (a LoRA base stays
    bf16, a QLoRA base 4-bit); under DeepSpeed, whose bf16 mode keeps its own fp32 copy, nothing
    is cast.
    """
    if under_deepspeed:
        return 0
    cast = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
            cast += 1
    return cast


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total), counting a packed 4-bit weight by the values it holds, as PEFT does, and a
    ZeRO-3-partitioned one (empty on each process) by its full size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.ds_numel if hasattr(p, "ds_numel") else p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2 * (p.element_size() if p.dtype != torch.uint8 else 1)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def trainable_line(model) -> str:
    trainable, total = count_parameters(model)
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"
