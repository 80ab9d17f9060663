"""The RL stage: TRL's ``GRPOTrainer`` with constrained beam rollouts and ranking rewards.

Composition, not a hand-written GRPO loop: the trainer is TRL's, the adapter is PEFT's
(``peft_config`` is handed to the trainer, and the SFT adapter's weights are loaded into it,
so the KL reference is the base with the adapter disabled, not a second model copy), and
generation goes through TRL's ``rollout_func`` hook to :mod:`minirec.beam`: one constrained
beam search per prompt yields its G distinct catalogue SIDs in beam order.
"""

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from minirec.beam import constrained_beam_search, constrained_sample
from minirec.data import load_dataset
from minirec.distributed import single_process_group
from minirec.errors import MinirecError
from minirec.evaluate import build_trie, rank_sids
from minirec.flags import only_with
from minirec.io import write_json
from minirec.metrics import rank_of, ranking_metrics
from minirec.modeling.adapters import resolve_target_modules, trainable_line
from minirec.modeling.loading import keep_4bit_trainable, load_base, save_trained, use_bf16
from minirec.prompts import next_sid_prompt
from minirec.rl.config import RLConfig
from minirec.rl.rewards import build_rewards
from minirec.run_info import RunInfo, relative_to_run
from minirec.tokenization import encode_prompts

log = logging.getLogger(__name__)


class SIDRollout:
    """TRL ``rollout_func``: prompts arrive as consecutive groups of G copies; each group gets
    the G best catalogue SIDs of one beam search (or G constrained samples), in rank order."""

    def __init__(self, tokenizer, trie, num_generations, beam_search=True, temperature=1.0):
        self.tokenizer, self.trie, self.G = tokenizer, trie, num_generations
        self.beam_search, self.temperature = beam_search, temperature

    def __call__(self, prompts, trainer):
        from trl.models.utils import unwrap_model_for_generation

        n, proc = len(prompts), trainer.accelerator.process_index
        # Position within the group: groups are laid out contiguously across all processes.
        positions = [(proc * n + i) % self.G for i in range(n)]
        starts = {i for i in range(n) if positions[i] == 0 or i == 0}
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        group_prompts = [prompt_ids[s] for s in sorted(starts)]
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            was_training = model.training
            model.eval()
            if self.beam_search:
                groups = constrained_beam_search(model, group_prompts, self.trie, self.G, self.tokenizer.pad_token_id)
            else:
                groups = constrained_sample(model, group_prompts, self.trie, self.G, self.tokenizer.pad_token_id,
                                            self.temperature)
            model.train(was_training)
        completion_ids, group = [], -1
        for i in range(n):
            group += i in starts
            beams = groups[group]
            if positions[i] >= len(beams):
                raise MinirecError(f"only {len(beams)} catalogue SIDs reachable for a prompt, fewer than "
                                   f"--num_generations {self.G}; lower --num_generations")
            completion_ids.append(list(beams[positions[i]].tokens) + [self.tokenizer.eos_token_id])
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None,
                "beam_rank": positions}


class _AdaptedHead(torch.nn.Module):
    """What TRL's fused LM head should see: the output projection *with* PEFT's trainable SID rows.

    TRL computes per-token log-probs by reading ``get_output_embeddings().weight`` directly
    (never calling the module), which would silently use the LM head without the SID rows that
    SFT trained and RL keeps training. This view returns the merged weight, or the base weight
    while adapters are disabled (TRL's KL reference), so gradients reach the trainable rows.
    """

    def __init__(self, layer):
        super().__init__()
        self._layer = [layer]  # a list: not registered as a submodule (no double counting/saving)

    @property
    def weight(self):
        layer = self._layer[0]
        base = layer.base_layer.weight
        if layer.disable_adapters or not layer.active_adapters or layer.merged:
            return base
        return layer.get_merged_weights(layer.active_adapters)

    @property
    def bias(self):
        return getattr(self._layer[0].base_layer, "bias", None)


def expose_adapted_lm_head(peft_model) -> None:
    """Point the base model's ``get_output_embeddings`` at :class:`_AdaptedHead` when the LM head
    carries trainable SID rows (tied or untied); a plain LM head is left alone."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    base = peft_model.get_base_model()
    head = base.get_output_embeddings()
    layer = getattr(head, "token_adapter", head)
    if isinstance(layer, TrainableTokensLayer):
        view = _AdaptedHead(layer)
        base.get_output_embeddings = lambda: view


def _load_policy(config: RLConfig, run: RunInfo, tokenizer):
    """-> (model, peft_config or None, adapter weights to load or None, mode)."""
    from peft import LoraConfig, PeftConfig, prepare_model_for_kbit_training
    from safetensors.torch import load_file

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
    if len(tokenizer) != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if getattr(model, "is_quantized", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    if not wants_peft:
        return model, None, None, "full"
    if run.is_adapter:
        peft_config = PeftConfig.from_pretrained(config.model_path)
        peft_config.inference_mode = False
        return model, peft_config, load_file(str(Path(config.model_path) / "adapter_model.safetensors")), run.mode
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, task_type="CAUSAL_LM",
                             target_modules=resolve_target_modules(model, config.lora_target_modules))
    return model, peft_config, None, "qlora" if config.use_qlora else "lora"


def _ranking_callback(trainer_ref, config, rows, catalogue, tokenizer, trie, run):
    from transformers import TrainerCallback

    class RankingEval(TrainerCallback):
        """HR@10 / NDCG@10 / MRR of the current policy on a valid subset, logged with the metrics."""

        last_step = None

        def evaluate(self, state):
            if self.last_step == state.global_step:  # already evaluated at this step
                return
            self.last_step = state.global_step
            trainer = trainer_ref[0]
            ranked = rank_sids(trainer.model, tokenizer, catalogue, [r.history for r in rows], run.template,
                               run.max_history, num_beams=max(10, config.num_generations), batch_size=16,
                               trie=trie, progress=False)
            ranks = [rank_of([s for s, _ in preds], catalogue.sid(r.target)) for preds, r in zip(ranked, rows)]
            m = ranking_metrics(ranks, ks=(10,))
            trainer.log({"valid_HR@10": m["HR@10"], "valid_NDCG@10": m["NDCG@10"], "valid_MRR": m["MRR"]})

        def on_train_begin(self, args, state, control, **kw):
            self.evaluate(state)  # the starting point, so every curve has its baseline

        def on_step_end(self, args, state, control, **kw):
            if config.eval_steps and state.global_step % config.eval_steps == 0:
                self.evaluate(state)

        def on_train_end(self, args, state, control, **kw):
            self.evaluate(state)

    return RankingEval()


def train(config: RLConfig) -> dict:
    from peft import set_peft_model_state_dict
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    config.validate()
    run = RunInfo.read(config.model_path)
    out = Path(config.output_dir)
    only_with(config, ("lora_r", "lora_alpha", "lora_target_modules"), not run.is_adapter,
              f"to a new adapter; {config.model_path} holds a {run.mode} adapter that RL continues as it is")
    data = load_dataset(config.data_dir or run.data_dir, splits=("train", "valid"))
    catalogue = data.catalogue
    run.check_index(catalogue)
    if config.num_generations > len(catalogue.items_by_sid):
        raise MinirecError(f"--num_generations {config.num_generations} exceeds the {len(catalogue.items_by_sid)} "
                           "distinct catalogue SIDs")
    funcs, weights = build_rewards(config.reward_type, catalogue, config.num_generations, config.item_embeddings)
    if config.deepspeed and single_process_group():
        log.info("--deepspeed without a launcher: running as a single process (rank 0 of 1)")
    tokenizer = AutoTokenizer.from_pretrained(config.model_path, trust_remote_code=config.trust_remote_code)
    model, peft_config, adapter_state, mode = _load_policy(config, run, tokenizer)

    rows = data.split("train")[: config.max_prompts or None]
    from datasets import Dataset

    train_ds = Dataset.from_dict({
        "prompt": [next_sid_prompt(r.history, catalogue, run.template, run.max_history) for r in rows],
        "target_sid": [catalogue.sid(r.target) for r in rows],
    })
    step_size = config.prompts_per_step * config.num_generations
    micro = config.micro_batch_size or step_size
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=micro, gradient_accumulation_steps=step_size // micro,
        num_generations=config.num_generations, max_completion_length=16, beta=config.beta,
        loss_type=config.loss_type, importance_sampling_level="sequence" if config.gspo else "token",
        learning_rate=config.learning_rate, num_train_epochs=config.num_epochs, max_steps=config.max_steps,
        reward_weights=weights, logging_steps=config.logging_steps, save_steps=config.save_steps,
        save_total_limit=2, seed=config.seed, bf16=use_bf16(), use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=config.gradient_checkpointing, deepspeed=config.deepspeed or None,
        report_to=[] if config.report_to in ("", "none") else [config.report_to], remove_unused_columns=False,
        temperature=config.temperature, disable_dropout=True,
    )
    trie = build_trie(model, tokenizer, catalogue)
    trainer_ref = []
    callbacks = [_ranking_callback(trainer_ref, config, data.split("valid")[: config.eval_rows], catalogue,
                                   tokenizer, trie, run)] if config.eval_rows else []
    trainer = GRPOTrainer(
        model=model, reward_funcs=funcs, args=args, train_dataset=train_ds, processing_class=tokenizer,
        peft_config=peft_config, callbacks=callbacks,
        rollout_func=SIDRollout(tokenizer, trie, config.num_generations, config.beam_search, config.temperature),
    )
    trainer_ref.append(trainer)
    if peft_config is not None:
        expose_adapted_lm_head(trainer.model)
    if adapter_state is not None:
        result = set_peft_model_state_dict(trainer.model, adapter_state)
        if result.unexpected_keys:
            raise MinirecError(f"{config.model_path}: adapter weights do not fit the rebuilt adapter "
                               f"({len(result.unexpected_keys)} unexpected keys)")
    print(trainable_line(trainer.model), flush=True)

    started = time.perf_counter()
    resume = config.resume_from_checkpoint or None
    if resume == "last":
        from transformers.trainer_utils import get_last_checkpoint

        resume = get_last_checkpoint(str(out))
        if resume is None:
            raise MinirecError(f"--resume_from_checkpoint last: no checkpoint-* dir in {out}")
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    if not trainer.is_world_process_zero():
        return {}
    save_trained(trainer.model, tokenizer, out)
    steps = trainer.state.global_step
    metrics = {"train_seconds": round(seconds, 2), "steps": steps,
               "seconds_per_step": round(seconds / max(steps, 1), 2), "log_history": trainer.state.log_history}
    write_json(out / "metrics.json", metrics)
    base_path = run.resolve_base(config.model_path) if run.is_adapter else Path(config.model_path)
    RunInfo(base_model=run.base_model, base_model_path=relative_to_run(base_path, out) if mode != "full" else ".",
            mode=mode, template=run.template, max_history=run.max_history, tasks=run.tasks, data_dir=run.data_dir,
            sid_index_sha256=run.sid_index_sha256, quantization=config.quantization, stage="rl",
            config={**asdict(config), "sft_run": str(config.model_path)}).write(out)
    return metrics
