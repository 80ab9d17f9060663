"""The RL stage: TRL's ``GRPOTrainer`` with constrained beam rollouts and ranking rewards.

Composition, not a hand-written GRPO loop: the trainer is TRL's, the adapter is PEFT's
(a new adapter's ``peft_config`` is handed to the trainer; a continued SFT adapter is handed over
wrapped, and TRL keeps a frozen copy of it as the KL reference, never a second model), and
generation goes through TRL's ``rollout_func`` hook to :mod:`minirec.beam`: one constrained
beam search per prompt yields its G distinct catalogue SIDs in beam order.
"""

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from minirec.checkpoints import resolve_resume
from minirec.data import load_dataset
from minirec.deepspeed_config import config_path
from minirec.distributed import (batch_layout, batch_line, is_main_process, process_device, rank,
                                  single_process_group, world_size)
from minirec.errors import MinirecError
from minirec.decoding import build_trie, rank_sids
from minirec.config import only_with
from minirec.io import write_json
from minirec.plots import plot_rl
from minirec.modeling.adapters import resolve_target_modules, trainable_line, upcast_trainable
from minirec.modeling.loading import fit_embeddings, keep_4bit_trainable, load_base, save_trained, use_bf16
from minirec.prompts import next_sid_prompt
from minirec.rl.config import RLConfig, fsdp_requested
from minirec.rl.rewards import build_rewards
from minirec.run_info import CATALOGUE_DIR, RunInfo, relative_to_run
from minirec.teacher import load_teacher

log = logging.getLogger(__name__)


def _load_policy(config: RLConfig, run: RunInfo, tokenizer):
    """-> (model, peft_config or None, mode).

    The KL reference is the SFT policy on every path: a full run trains against TRL's frozen
    copy of it; a new LoRA on a full run starts at zero, so "adapters disabled" is the SFT model;
    a continued SFT adapter is handed to TRL already wrapped, and TRL keeps a frozen "ref" copy
    of it (:func:`sync_reference_adapter` completes that copy).
    """
    from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training

    wants_peft = config.use_lora or config.use_qlora
    if run.is_adapter and not wants_peft:
        raise MinirecError(f"{config.model_path} holds a {run.mode} adapter: pass --use_lora True (or --use_qlora True) "
                           "to continue it, or merge it first with python -m minirec.merge for full RL")
    if wants_peft and (run.quantization == "4bit") != config.use_qlora:
        log.warning("the SFT run was trained %s 4-bit quantization and RL runs %s it; this works, but the adapter "
                    "sees slightly different base weights", "with" if run.quantization == "4bit" else "without",
                    "with" if config.use_qlora else "without")
    path = run.resolve_base(config.model_path) if run.is_adapter else Path(config.model_path)
    model, _ = load_base(path, config.quantization, config.trust_remote_code)
    keep_4bit_trainable(model)
    fit_embeddings(model, len(tokenizer))  # as SFT did: never below a padded vocabulary
    if getattr(model, "is_quantized", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    if not wants_peft:
        return model, None, "full"
    if run.is_adapter:
        return PeftModel.from_pretrained(model, config.model_path, is_trainable=True), None, run.mode
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, task_type="CAUSAL_LM",
                             target_modules=resolve_target_modules(model, config.lora_target_modules))
    return model, peft_config, "qlora" if config.use_qlora else "lora"


def sync_reference_adapter(model) -> int:
    """Copy every "default" adapter tensor into TRL's frozen "ref" adapter; returns how many.

    TRL copies only parameters named ``*.default.*``, which misses PEFT's trainable-token deltas
    (``...trainable_tokens_delta.default``): the reference would then use the pre-SFT SID rows.
    """
    import torch

    params = dict(model.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, p in params.items():
            ref = name.replace(".default.", ".ref.") if ".default." in name else (
                name[: -len(".default")] + ".ref" if name.endswith(".default") else None)
            if ref in params:
                params[ref].data.copy_(p.data)
                params[ref].requires_grad_(False)
                copied += 1
    return copied


def select_prompt_rows(rows, max_prompts: int, order: str, seed: int) -> list:
    """The train rows RL rolls out (and dynamic sampling refills from), in file order.

    ``random``: a seeded uniform sample of the whole split; ``recent``: the rows with the latest
    targets (train files are in target-time order). Either way, all rows when ``max_prompts`` is 0.
    """
    if not max_prompts or max_prompts >= len(rows):
        return list(rows)
    if order == "recent":
        return list(rows[-max_prompts:])
    picked = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_prompts]
    return [rows[i] for i in sorted(picked.tolist())]


def evenly_spaced(rows, k: int) -> list:
    """``k`` rows spread over the whole of ``rows`` (indices round(i * n / k)), the same every run;
    all of them when ``k`` is 0 or not below their count."""
    n = len(rows)
    if not k or k >= n:
        return list(rows)
    return [rows[round(i * n / k)] for i in range(k)]


def planned_evaluations(config: RLConfig, prompts: int) -> int:
    """How many evaluations after the start the run plans (keep-best's Bonferroni k): one per
    --eval_steps of the planned steps, the last at the end."""
    steps = config.max_steps if config.max_steps > 0 else math.ceil(
        config.num_epochs * max(prompts // config.prompts_per_step, 1))
    return max(math.ceil(steps / config.eval_steps), 1) if config.eval_steps else 1


def weighted_reward(funcs, weights):
    """The reward TRL will give each completion (its weighted sum), for dynamic sampling's filter."""

    def score(completions, targets, beam_rank, history):
        total = [0.0] * len(completions)
        for func, weight in zip(funcs, weights):
            values = func(completions=completions, target_sid=targets, beam_rank=beam_rank, history=history)
            total = [t + weight * v for t, v in zip(total, values)]
        return total

    return score


def train(config: RLConfig) -> dict:
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    from minirec.rl.callbacks import RankingEval
    from minirec.rl.lm_head import expose_adapted_lm_head
    from minirec.rl.rollout import SIDRollout
    from minirec.rl.trainer import SIDGRPOTrainer

    config.validate()
    config.check_paths()
    run = RunInfo.read(config.model_path)
    out = Path(config.output_dir)
    resume = resolve_resume(config.resume_from_checkpoint, out)  # a damaged checkpoint: refused before loading
    only_with(config, ("lora_r", "lora_alpha", "lora_target_modules"), not run.is_adapter,
              f"to a new adapter; {config.model_path} holds a {run.mode} adapter that RL continues as it is")
    data_dir = config.data_dir or run.data_dir  # what RL reads, so what its run.json records
    data = load_dataset(data_dir, splits=("train", "valid"))
    catalogue = data.catalogue
    run.check_index(catalogue)
    if config.num_generations > len(catalogue.items_by_sid):
        raise MinirecError(f"--num_generations {config.num_generations} exceeds the {len(catalogue.items_by_sid)} "
                           "distinct catalogue SIDs")
    teacher = load_teacher(config.cf_model, catalogue) if config.cf_model else None
    funcs, weights = build_rewards(config.reward_type, catalogue, config.num_generations, config.item_embeddings,
                                   teacher, config.cf_reward_scale)
    if config.deepspeed and single_process_group():
        log.info("--deepspeed without a launcher: running as a single process (rank 0 of 1)")
    tokenizer = AutoTokenizer.from_pretrained(config.model_path, trust_remote_code=config.trust_remote_code)
    model, peft_config, mode = _load_policy(config, run, tokenizer)

    rows = select_prompt_rows(data.split("train"), config.max_prompts, config.prompt_order, config.seed)
    from datasets import Dataset

    train_ds = Dataset.from_dict({
        "prompt": [next_sid_prompt(r.history, catalogue, run.template, run.max_history) for r in rows],
        "target_sid": [catalogue.sid(r.target) for r in rows],
        "history": [" ".join(r.history) for r in rows],  # what the cf reward's teacher sees (never the target)
    })
    # prompts_per_step is global: each rank rolls out whole groups of G (one beam search per
    # group), and the same prompts in the same order for any process count.
    step_size, world = config.prompts_per_step * config.num_generations, world_size()
    micro, accumulation = batch_layout(step_size, config.micro_batch_size or step_size, world,
                                       multiple_of=config.num_generations, what="--prompts_per_step x --num_generations")
    if is_main_process():
        print(batch_line(micro, accumulation, world, "completions"), flush=True)
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
        num_generations=config.num_generations, max_completion_length=16, beta=config.beta,
        loss_type=config.loss_type, importance_sampling_level="sequence" if config.gspo else "token",
        learning_rate=config.learning_rate, num_train_epochs=config.num_epochs, max_steps=config.max_steps,
        reward_weights=weights, logging_steps=config.logging_steps, save_steps=config.save_steps,
        save_total_limit=2, seed=config.seed, bf16=use_bf16(), use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=config.gradient_checkpointing, deepspeed=config.deepspeed or None,
        report_to=[] if config.report_to in ("", "none") else [config.report_to], remove_unused_columns=False,
        temperature=config.temperature, disable_dropout=True,
    )
    if config.dynamic_sampling and fsdp_requested(args.fsdp):
        raise MinirecError("--dynamic_sampling True does not run under FSDP (processes make different numbers of "
                           "generate calls, which hangs its collectives); use DDP or DeepSpeed")
    trie = build_trie(model, tokenizer, catalogue).to(process_device())  # where the Trainer puts the policy
    pool = (train_ds["prompt"], train_ds["target_sid"], train_ds["history"]) if config.dynamic_sampling else None
    rollout = SIDRollout(tokenizer, trie, config.num_generations, config.beam_search, config.temperature,
                         config.add_target, refill_pool=pool, refill_rounds=config.refill_rounds,
                         group_rewards=weighted_reward(funcs, weights), seed=config.seed + rank())
    eval_rows = evenly_spaced(data.split("valid"), config.eval_rows)

    def rank_fn(policy, histories):
        return rank_sids(policy, tokenizer, catalogue, histories, run.template, run.max_history,
                         num_beams=max(10, config.num_generations), batch_size=16, trie=trie, progress=False)

    evaluations = planned_evaluations(config, len(train_ds))
    ranking = RankingEval(rank_fn, eval_rows, catalogue, config.eval_steps, config.keep_best, rollout, out,
                          config.keep_margin, evaluations)
    if is_main_process():
        if config.keep_best:
            print(f"keep-best: a policy replaces the start when its valid gain exceeds {ranking.threshold:.2f} "
                  f"standard errors (--keep_margin {config.keep_margin:g}, Bonferroni over {evaluations} planned "
                  f"evaluations on {len(eval_rows)} valid rows)", flush=True)
        else:
            log.warning("--keep_best False: the saved policy is the last one, not checked against the start")
    trainer = SIDGRPOTrainer(
        model=model, reward_funcs=funcs, args=args, train_dataset=train_ds, processing_class=tokenizer,
        peft_config=peft_config, callbacks=[ranking], rollout_func=rollout,
        sibling_weight=config.sibling_weight,
    )
    ranking.trainer = trainer
    # After TRL built its reference (bf16, like the policy) and cast QLoRA adapters to bf16.
    upcast_trainable(trainer.model, under_deepspeed=bool(config_path(config.deepspeed)))
    peft_model = hasattr(trainer.model, "peft_config")
    if peft_model:
        expose_adapted_lm_head(trainer.model)
    if peft_model and "ref" in trainer.model.peft_config:
        sync_reference_adapter(trainer.model)
    print(trainable_line(trainer.model), flush=True)

    started = time.perf_counter()
    if resume:
        ranking.load_state(resume)
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    if not trainer.is_world_process_zero():
        return {}
    best_step = ranking.restore_best()
    if peft_model and "ref" in trainer.model.peft_config:
        trainer.model.delete_adapter("ref")  # the frozen reference copy is not part of the result
    save_trained(trainer.model, tokenizer, out)
    steps = trainer.state.global_step
    metrics = {"train_seconds": round(seconds, 2), "steps": steps,
               "seconds_per_step": round(seconds / max(steps, 1), 2), "kept_step": best_step,
               "valid_by_step": ranking.history, "log_history": trainer.state.log_history}
    write_json(out / "metrics.json", metrics)
    plot_rl(trainer.state.log_history, out / "training.png")
    base_path = run.resolve_base(config.model_path) if run.is_adapter else Path(config.model_path)
    info = RunInfo(base_model=run.base_model, mode=mode,
                   base_model_path=relative_to_run(base_path, out) if mode != "full" else ".",
                   template=run.template, max_history=run.max_history, tasks=run.tasks, data_dir=str(data_dir),
                   sid_index_sha256=run.sid_index_sha256, quantization=config.quantization, stage="rl",
                   config={**asdict(config), "sft_run": str(config.model_path)})
    carried = Path(config.model_path) / CATALOGUE_DIR  # the SFT run's own catalogue (older runs have none)
    info.write(out, catalogue_from=carried if (carried / "index.json").is_file() else data_dir)
    return metrics
