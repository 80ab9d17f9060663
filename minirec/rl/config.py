"""Configuration of the RL stage: one documented field per flag of ``rl.py``."""

import os
from dataclasses import dataclass

from minirec.config import Config, only_with
from minirec.data.readers import check_dataset_dir
from minirec.deepspeed_config import check_deepspeed, config_path
from minirec.errors import MinirecError
from minirec.rl.rewards import CF_SCALES, parse_reward_spec
from minirec.run_info import RunInfo, check_output_dir

LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")
PROMPT_ORDERS = ("random", "recent")


@dataclass
class RLConfig(Config):
    # --- inputs -----------------------------------------------------------------------
    model_path: str
    """An SFT (or RL) output dir: adapter or full weights, tokenizer and run.json."""
    data_dir: str = ""
    """Dataset dir; default: the one recorded in the run. Its index.json must be the run's."""
    max_prompts: int = 0
    """Train on N train rows (0 = all of them), chosen by --prompt_order."""
    prompt_order: str = "random"
    """Which N rows: random (a seeded uniform sample of the whole train split) or recent (the N
    rows with the latest targets; train files are in target-time order). Dynamic sampling draws
    its replacements from the same rows."""

    # --- policy -----------------------------------------------------------------------
    use_lora: bool = False
    """Train an adapter: continue the run's adapter, or put a new LoRA on a full run."""
    use_qlora: bool = False
    """As --use_lora, with the base loaded in 4-bit NF4."""
    lora_r: int = 8
    """Rank of a *new* LoRA adapter (a continued adapter keeps its own config)."""
    lora_alpha: int = 16
    """Scaling of a new LoRA adapter."""
    lora_target_modules: str = "all"
    """Target layers of a new LoRA adapter: all, qkv or comma-separated names."""
    trust_remote_code: bool = False
    """Allow a checkpoint's own modelling code to run."""

    # --- rollouts and rewards -----------------------------------------------------------
    num_generations: int = 16
    """Completions per prompt (G): the beam width of the rollout beam search."""
    beam_search: bool = True
    """Rollouts by constrained beam search (G distinct SIDs); False = constrained sampling."""
    temperature: float = 1.0
    """Sampling temperature when --beam_search False."""
    add_target: bool = False
    """Target-in-group: when the rollouts miss the target, it replaces the last one, so every
    group holds a positive (MiniOneRec's add_gt)."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: a group whose rewards are all equal (zero advantage: under
    rule/ranking rewards, every rollout misses the target) is replaced by a train prompt whose
    group's rewards vary, drawn on policy without replacement within a step, so every step holds
    informative groups; costs extra rollouts. Each process draws from its own generator (seed +
    rank), so two processes may draw the same replacement prompt in one step. Not under FSDP:
    processes then make different numbers of generate calls, which FSDP's collectives hang on."""
    refill_rounds: int = 2
    """Dynamic sampling: rounds of replacement draws per step (each rolls out 2x the missing
    groups); groups whose rewards still do not vary after them stay, with no gradient."""
    reward_type: str = "ranking"
    """rule, ranking, ranking_only, prefix, semantic, or weighted sums like rule:1,prefix:0.5."""
    item_embeddings: str = ""
    """.npy of item text embeddings (catalogue order) with its .json sidecar, for the semantic reward."""
    cf_model: str = ""
    """The collaborative teacher of the cf reward: a python -m minirec.baselines sasrec output dir
    trained on the SFT run's catalogue. It scores each rollout from the prompt's history only."""
    cf_reward_scale: str = "logp"
    """The cf reward's value: logp (the teacher's log-probability of the SID), share (its probability
    renormalised over the group's G SIDs) or rank (1/log2(2 + its rank by the teacher in the group))."""

    # --- GRPO (passed to TRL) -----------------------------------------------------------
    beta: float = 1e-3
    """KL coefficient against the reference policy (adapter disabled, or the SFT weights)."""
    loss_type: str = "grpo"
    """TRL loss normalisation: grpo, dapo, dr_grpo or bnpo."""
    gspo: bool = False
    """Sequence-level importance sampling (GSPO) instead of token-level."""
    sibling_weight: float = 0.0
    """Sibling-GRPO (V-STAR, arXiv 2602.10699): add this weight x the sibling loss to the GRPO loss
    (0 = off; 1 = V-STAR's). Each SID token gets the advantage of its node among the siblings that
    the group's rollouts reach after the same prefix, so credit lands where rollouts part ways. The
    std is the population std over the siblings (as V-STAR defines it), so two siblings always get
    about +1 and -1, however small or large their reward difference."""
    learning_rate: float = 1e-5
    """Peak learning rate."""
    num_epochs: float = 1
    """Passes over the (possibly --max_prompts-limited) train rows."""
    max_steps: int = -1
    """Stop after this many optimizer steps (overrides num_epochs when > 0)."""
    prompts_per_step: int = 8
    """Prompts per optimizer step over all processes (each yields num_generations completions)."""
    micro_batch_size: int = 0
    """Most completions per forward pass per process (0 = a process's whole share of a step)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    seed: int = 42
    """Seed for data order and sampling."""

    # --- run ------------------------------------------------------------------------------
    output_dir: str = "out/rl"
    """Where the trained adapter/weights, run.json and metrics.json go."""
    eval_steps: int = 50
    """Every N steps, HR@10/NDCG@10 on --eval_rows valid rows (0 = only at the start and the end)."""
    eval_rows: int = 0
    """Valid rows (evenly spaced, the same every run) for the in-training ranking evaluation; 0 = all
    of them. The evaluation always runs (at least at the start and the end)."""
    keep_best: bool = True
    """Save the policy with the best valid HR@10 + NDCG@10 seen at the ranking evaluations, not the
    last; a policy replaces the start only when its gain over it passes the --keep_margin test.
    False ships the last policy, unchecked against the start."""
    keep_margin: float = 2.0
    """Keep-best: the one-sided z a single evaluation's row-by-row (paired) valid gain over the start
    must exceed, in standard errors. With k planned evaluations (ceil(steps / --eval_steps); 1 with
    --eval_steps 0) the threshold is Bonferroni's z_k = Phi^-1(1 - (1 - Phi(keep_margin)) / k)
    (2 -> 2.43 for k = 3, 2.84 for k = 10), so a policy no better than the start passes by luck at
    most as often as with one evaluation; the run logs the z_k it uses. 0 keeps any higher score."""
    save_steps: int = 100
    """Checkpoint every N steps (for --resume_from_checkpoint)."""
    resume_from_checkpoint: str = ""
    """A checkpoint dir of this output_dir, or "last"."""
    deepspeed: str = ""
    """DeepSpeed config JSON (configs/deepspeed/; configs/README.md says which), passed to the trainer."""
    logging_steps: int = 1
    """Log reward, reward std, KL and the zero-advantage fraction every N steps."""
    report_to: str = "tensorboard"
    """Trainer loggers: "tensorboard", "none", ..."""

    @property
    def quantization(self):
        return "4bit" if self.use_qlora else None

    def validate(self) -> None:
        if not self.model_path:
            raise MinirecError("--model_path is required: an SFT output dir such as out/sft_full")
        if self.num_generations < 2:
            raise MinirecError(f"--num_generations {self.num_generations}: GRPO needs at least 2 completions per prompt")
        if self.loss_type not in LOSS_TYPES:
            raise MinirecError(f"--loss_type {self.loss_type!r}: choose one of {', '.join(LOSS_TYPES)}")
        if self.prompts_per_step <= 0 or self.learning_rate <= 0:
            raise MinirecError("--prompts_per_step and --learning_rate must be positive")
        step = self.prompts_per_step * self.num_generations
        if self.micro_batch_size and (step % self.micro_batch_size or self.micro_batch_size % self.num_generations):
            raise MinirecError(
                f"--micro_batch_size {self.micro_batch_size} must divide prompts_per_step x num_generations = {step} "
                f"and be a multiple of num_generations ({self.num_generations})"
            )
        if not self.beam_search and self.temperature <= 0:
            raise MinirecError("--temperature must be > 0 with --beam_search False")
        self._validate_combinations(dict(parse_reward_spec(self.reward_type)))

    def _validate_combinations(self, rewards: dict) -> None:
        """Flags that mean nothing together, or nothing at all, are errors rather than silently ignored."""
        for name in ("max_prompts", "micro_batch_size", "eval_steps", "eval_rows", "beta", "sibling_weight"):
            if getattr(self, name) < 0:
                raise MinirecError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.save_steps <= 0 or self.logging_steps <= 0 or (self.num_epochs <= 0 and self.max_steps <= 0):
            raise MinirecError("--save_steps, --logging_steps and --num_epochs (or --max_steps) must be positive")
        if self.prompt_order not in PROMPT_ORDERS:
            raise MinirecError(f"--prompt_order {self.prompt_order!r}: choose one of {', '.join(PROMPT_ORDERS)}")
        only_with(self, ("prompt_order",), self.max_prompts > 0,
                  "with --max_prompts N (which N train rows; --max_prompts 0 rolls out all of them)")
        if self.dynamic_sampling and fsdp_requested():
            raise MinirecError("--dynamic_sampling True does not run under FSDP (processes make different numbers "
                               "of generate calls, which hangs its collectives); use DDP or DeepSpeed")
        if self.keep_margin < 0:
            raise MinirecError(f"--keep_margin must be >= 0, got {self.keep_margin}")
        only_with(self, ("keep_margin",), self.keep_best,
                  "with --keep_best True (its test against the start; False ships the last policy unchecked)")
        if self.dynamic_sampling and self.add_target:
            raise MinirecError("--dynamic_sampling and --add_target exclude each other: one replaces groups "
                               "that miss the target, the other adds the target to them")
        only_with(self, ("refill_rounds",), self.dynamic_sampling, "with --dynamic_sampling True")
        if self.refill_rounds < 1:
            raise MinirecError(f"--refill_rounds must be >= 1, got {self.refill_rounds}")
        if self.use_lora and self.use_qlora:
            raise MinirecError("--use_lora and --use_qlora exclude each other; --use_qlora is LoRA on a 4-bit base")
        only_with(self, ("lora_r", "lora_alpha", "lora_target_modules"), self.use_lora or self.use_qlora,
                  "with --use_lora or --use_qlora")
        ranked = [name for name in ("ranking", "ranking_only") if name in rewards]
        if ranked and not self.beam_search:
            raise MinirecError(f"--reward_type {ranked[0]} rewards beam ranks, which samples do not have; "
                               "keep --beam_search True or use rule/prefix/semantic rewards")
        only_with(self, ("temperature",), not self.beam_search,
                  "to sampled rollouts (--beam_search False); beam search is deterministic")
        if "semantic" in rewards and not self.item_embeddings:
            raise MinirecError("--reward_type semantic needs --item_embeddings FILE.npy (one row per catalogue item)")
        if self.item_embeddings and "semantic" not in rewards:
            raise MinirecError("--item_embeddings only applies with a semantic reward (--reward_type semantic, ...)")
        if "cf" in rewards and not self.cf_model:
            raise MinirecError("--reward_type cf needs --cf_model DIR (a python -m minirec.baselines sasrec output dir)")
        only_with(self, ("cf_model", "cf_reward_scale"), "cf" in rewards, "with a cf reward (--reward_type ranking,cf:W)")
        if self.cf_reward_scale not in CF_SCALES:
            raise MinirecError(f"--cf_reward_scale {self.cf_reward_scale!r}: choose one of {', '.join(CF_SCALES)}")

    def output(self):
        return "--output_dir", self.output_dir

    def check_paths(self) -> None:
        if config_path(self.deepspeed):  # --deepspeed, or accelerate launch's DeepSpeed config
            check_deepspeed(config_path(self.deepspeed), self.quantization, rl=True)
        RunInfo.read(self.model_path)  # a finished run, or a one-line error before anything loads
        check_output_dir(self.output_dir)
        if self.data_dir:
            check_dataset_dir(self.data_dir)
        if self.cf_model:
            from minirec.teacher import check_teacher_dir

            check_teacher_dir(self.cf_model)


def fsdp_requested(fsdp=None) -> bool:
    """Whether the run is under FSDP: accelerate launch's FSDP config, or ``fsdp`` of the training args."""
    env = os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() in ("1", "true", "yes")
    return env or bool(fsdp)
