"""The SFT stage: data -> prompts -> tokens -> transformers' Trainer -> a self-describing run dir.

Read top to bottom: :func:`train` validates everything before it writes anything, sets up
the model in the requested mode, trains with early stopping on the valid loss, then saves
the adapter (or weights), tokenizer, ``metrics.json``, ``training.png`` and, last,
``run.json`` (its presence marks a finished run).
"""

import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from minirec.checkpoints import resolve_resume
from minirec.data import load_dataset
from minirec.data.sequences import user_sequences
from minirec.deepspeed_config import config_path
from minirec.distributed import (batch_layout, batch_line, is_main_process, map_sharded, single_process_group,
                                 world_size)
from minirec.errors import MinirecError
from minirec.io import write_json
from minirec.modeling.adapters import trainable_line, upcast_trainable, wrap_model
from minirec.modeling.bases import prepare_base
from minirec.modeling.loading import (add_sid_tokens, init_sid_rows, keep_4bit_trainable, load_base, save_trained,
                                     use_bf16)
from minirec.modeling.tiny import TinySpec, add_hidden_dropout
from minirec.plots import plot_training
from minirec.prompts import TITLE_TASKS, build_examples, build_sequence_examples, resolve_tasks
from minirec.run_info import RunInfo, relative_to_run
from minirec.sft.config import SFTConfig
from minirec.sft.distill import DistillCollator, target_histories
from minirec.sft.trainer import SIDTrainer, Throughput
from minirec.sid.text import load_item_embeddings
from minirec.teacher import load_teacher
from minirec.tokenization import CompletionCollator, encode_examples, encode_sequence_examples

log = logging.getLogger(__name__)


@contextmanager
def _removed_on_failure(path: Path):
    """Create ``path``; if setup fails before training starts, leave no trace of it."""
    existed = path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        raise


def _dataset(encoded):
    from datasets import Dataset

    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    return Dataset.from_dict(encoded)


def _callbacks(config):
    from transformers import EarlyStoppingCallback

    callbacks = [Throughput()]
    if config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    return callbacks


def _across_processes(fn, rows):
    """``fn(rows)``, split across processes unless ZeRO-3 partitions the weights (then every
    forward gathers them from all processes, so each process decodes every row)."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return fn(rows) if is_deepspeed_zero3_enabled() else map_sharded(fn, rows)


def _rank_fn(config: SFTConfig, tokenizer, catalogue, valid_rows):
    """The selection search: ranks of the targets of a fixed, evenly spaced valid subset, each
    process decoding its share of the rows."""
    if config.select_by != "ranking":
        return None
    from minirec.decoding import rank_sids
    from minirec.metrics import rank_of

    # A floored stride (misses the split's tail, unlike RL's rows), kept for comparability with recorded runs.
    rows = valid_rows[:: max(1, len(valid_rows) // config.select_rows)][: config.select_rows]

    def ranks(model):
        def decode(part):
            ranked = rank_sids(model, tokenizer, catalogue, [r.history for r in part], config.template,
                               config.max_history, config.select_beams, batch_size=16, progress=False)
            return [rank_of([sid for sid, _ in preds], catalogue.sid(r.target)) for preds, r in zip(ranked, part)]

        return _across_processes(decode, rows)

    return ranks


def _distiller(config: SFTConfig, teacher, model, tokenizer, catalogue):
    from minirec.decoding import build_trie, sid_token_ids
    from minirec.sft.distill import Distiller

    return Distiller(teacher, catalogue, build_trie(model, tokenizer, catalogue).to("cpu"),
                     sid_token_ids(tokenizer, catalogue), config.cf_distill)


def load_for_training(config: SFTConfig, base_path, catalogue, text_embeddings=None):
    """The base with its SID rows, wrapped for ``config.mode`` -> (model, tokenizer).

    ``text_embeddings`` (item id -> vector, for ``--sid_init text``) start the SID rows from text.

    On a bf16 GPU the base loads in bf16, trainable weights included: :func:`build_trainer` makes
    those fp32 once the model is on its GPU.
    """
    model, tokenizer = load_base(base_path, config.quantization, config.trust_remote_code)
    keep_4bit_trainable(model)
    if config.base_model == "tiny" and config.mode in ("lora", "qlora", "freeze"):
        log.warning("%s on the randomly initialised tiny base learns little: the frozen base knows "
                    "nothing. Use full fine-tuning for tiny, or a pretrained --base_model.", config.mode)
    sid_ids = add_sid_tokens(model, tokenizer, catalogue.sid_tokens())
    if text_embeddings is not None:
        from minirec.modeling.text_init import init_text_rows

        init_text_rows(model, sid_ids, catalogue.sid_tokens(), catalogue, text_embeddings, seed=config.seed)
    else:
        init_sid_rows(model, sid_ids, config.sid_init)
    if config.tiny_hidden_dropout > 0:
        add_hidden_dropout(model, config.tiny_hidden_dropout)
    model = wrap_model(
        model, config.mode, sid_ids, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout, lora_target_modules=config.lora_target_modules,
        use_rslora=config.use_rslora, use_dora=config.use_dora,
        gradient_checkpointing=config.gradient_checkpointing,
    )
    return model, tokenizer


def build_trainer(config: SFTConfig, model, args, **kwargs) -> SIDTrainer:
    """The Trainer on ``model``, whose trainable weights then become fp32 master weights (frozen
    ones keep their dtype; under DeepSpeed, which keeps its own fp32 copy, nothing is cast).

    Cast after the Trainer moved the model to its GPU, not before: on the CPU, a full fine-tuning
    rank would briefly hold an fp32 copy of every weight in host RAM (28 GB for a 7B model, per
    rank). The Trainer builds its optimizer only in ``train()``, so the optimizer holds the fp32
    weights.
    """
    trainer = SIDTrainer(model=model, args=args, decay_embeddings=config.decay_embeddings, **kwargs)
    upcast_trainable(trainer.model, under_deepspeed=bool(config_path(config.deepspeed)))
    return trainer


def _training_args(config: SFTConfig, out: Path, micro: int, accumulation: int):
    import torch
    from transformers import TrainingArguments

    by_steps = config.eval_steps > 0
    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro * 2,
        gradient_accumulation_steps=accumulation,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        lr_scheduler_type="cosine_with_min_lr" if config.min_lr_ratio > 0 else "cosine",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio} if config.min_lr_ratio > 0 else None,
        adam_beta2=config.adam_beta2,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        label_smoothing_factor=config.label_smoothing,
        eval_strategy="steps" if by_steps else "epoch",
        save_strategy="steps" if by_steps else "epoch",
        eval_steps=config.eval_steps if by_steps else None,
        save_steps=config.eval_steps if by_steps else None,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_rank_score" if config.select_by == "ranking" else "eval_loss",
        greater_is_better=config.select_by == "ranking",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to=[] if config.report_to in ("", "none") else [config.report_to],
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5's name (the old one warns)
        bf16=use_bf16(),
        use_cpu=not torch.cuda.is_available(),
        deepspeed=config.deepspeed or None,
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def train(config: SFTConfig) -> dict:
    from transformers import set_seed

    config.validate()
    config.check_paths()
    out = Path(config.output_dir)
    resume = resolve_resume(config.resume_from_checkpoint, out)  # a damaged checkpoint: refused here
    if config.deepspeed and single_process_group():
        log.info("--deepspeed without a launcher: running as a single process (rank 0 of 1)")
    world = world_size()  # torchrun/accelerate set it before any init
    micro, accumulation = batch_layout(config.batch_size, config.micro_batch_size, world)
    if is_main_process():
        print(batch_line(micro, accumulation, world), flush=True)
    data = load_dataset(config.data_dir)
    catalogue = data.catalogue
    tasks = resolve_tasks(config.tasks, catalogue, config.template)
    if config.dense and tasks != ("next_sid",):
        raise MinirecError("--dense True trains the next_sid task alone; pass --tasks next_sid")
    text_embeddings = None
    if config.sid_init == "text":  # checked before the model loads
        items = list(catalogue.sids)
        text_embeddings = dict(zip(items, load_item_embeddings(config.item_embeddings, items)))
    if config.cf_model and not config.dense and tasks != ("next_sid",):
        raise MinirecError("--cf_model distils next-SID targets only: pass --dense True or --tasks next_sid")
    teacher = load_teacher(config.cf_model, catalogue) if config.cf_model else None  # before the model loads
    set_seed(config.seed)

    with _removed_on_failure(out):
        # Before the model loads: under ZeRO-3 the arguments make from_pretrained partition the
        # weights as they load (deepspeed.zero.Init) instead of loading a full copy per rank.
        args = _training_args(config, out, micro, accumulation)
        spec = TinySpec(hidden_size=config.tiny_hidden_size, num_layers=config.tiny_num_layers,
                        intermediate_size=2 * config.tiny_hidden_size, seed=config.seed,
                        attention_dropout=config.tiny_attention_dropout)
        with args.main_process_first(local=True, desc="base model"):  # rank 0 builds tiny, the others reuse it
            base_path = prepare_base(config.base_model, out, catalogue, spec,
                                     with_titles=bool(TITLE_TASKS & set(tasks)))
        model, tokenizer = load_for_training(config, base_path, catalogue, text_embeddings)
    print(trainable_line(model), flush=True)

    train_rows = data.split("train")[: config.max_train_rows or None]
    valid_rows = data.split("valid")[: config.max_valid_rows or None]
    if config.dense:
        sequences = build_sequence_examples(user_sequences(train_rows), catalogue, config.max_history)
        encoded = encode_sequence_examples(tokenizer, sequences)
    else:
        train_examples = build_examples(train_rows, catalogue, tasks, config.template, config.max_history)
        encoded = encode_examples(tokenizer, train_examples, config.cutoff_len)
    collator, distiller = CompletionCollator(tokenizer.pad_token_id), None
    if teacher is not None:  # each train row carries the history of each of its targets
        distiller = _distiller(config, teacher, model, tokenizer, catalogue)
        encoded["cf_history"] = distiller.encode_histories(target_histories(
            user_sequences(train_rows) if config.dense else train_rows, config.dense, config.max_history))
        collator = DistillCollator(collator, distiller)
    train_ds = _dataset(encoded)
    valid_examples = build_examples(valid_rows, catalogue, ("next_sid",), config.template, config.max_history)
    valid_ds = _dataset(encode_examples(tokenizer, valid_examples, config.cutoff_len))
    log.info("%d train rows (%s%s), %d valid rows (next_sid)", len(train_ds), ", ".join(tasks),
             ", dense sequences" if config.dense else "", len(valid_ds))

    callbacks = _callbacks(config)
    trainer = build_trainer(
        config, model, args, train_dataset=train_ds, eval_dataset=valid_ds,
        data_collator=collator, callbacks=callbacks, rank_fn=_rank_fn(config, tokenizer, catalogue, valid_rows),
        distiller=distiller,
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    keys = ("epoch", "step", "eval_loss", "eval_HR@10", "eval_NDCG@10", "eval_rank_score")
    eval_by_epoch = [{k: h[k] for k in keys if k in h} for h in trainer.state.log_history if "eval_loss" in h]
    final_eval = trainer.evaluate()  # of the best checkpoint, which load_best_model_at_end restored

    greedy = None
    if config.greedy_eval_rows > 0:
        from minirec.decoding import greedy_next_sid

        rows = data.split("valid")[: config.greedy_eval_rows]
        predictions = _across_processes(lambda part: greedy_next_sid(
            trainer.model, tokenizer, catalogue, part, config.template, config.max_history)[1], rows)
        hits = sum(p == catalogue.sid(r.target) for p, r in zip(predictions, rows))
        greedy = {"rows": len(rows), "split": "valid", "accuracy": hits / max(len(rows), 1)}
    state_dict = None
    if trainer.is_deepspeed_enabled and trainer.accelerator.deepspeed_plugin.zero_stage == 3:
        # Every rank joins the layer-by-layer gather; rank 0 receives the full 16-bit weights.
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if not trainer.is_world_process_zero():
        return {}
    save_trained(trainer.model, tokenizer, out, state_dict)
    print(f"saved the {'adapter' if config.mode != 'full' else 'weights'} to {out} (rank 0 of {world})", flush=True)
    metrics = {
        "train": result.metrics,
        "train_seconds": round(train_seconds, 2),
        "tokens_per_second": round(trainer.state.num_input_tokens_seen / max(train_seconds, 1e-9), 1),
        "epoch_seconds": callbacks[0].epoch_times,
        "selected_by": args.metric_for_best_model,
        "processes": world, "global_batch": micro * accumulation * world,
        "engine": type(trainer.model_wrapped).__name__,  # DeepSpeedEngine under DeepSpeed
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "final_eval": final_eval,
        "eval_by_epoch": eval_by_epoch,
        "log_history": trainer.state.log_history,
    }
    if greedy:
        metrics["greedy_next_sid_accuracy"] = greedy
        print(f"constrained greedy next-SID accuracy on {greedy['rows']} valid rows: {greedy['accuracy']:.4f}",
              flush=True)
    write_json(out / "metrics.json", metrics)
    plot_training(trainer.state.log_history, out / "training.png")

    RunInfo(
        base_model=config.base_model,
        base_model_path=relative_to_run(base_path, out),
        mode=config.mode,
        template=config.template,
        max_history=config.max_history,
        tasks=list(tasks),
        data_dir=str(config.data_dir),
        sid_index_sha256=catalogue.index_sha256,
        quantization=config.quantization,
        config=asdict(config),
    ).write(out)
    return metrics
