"""The default base model: a small Qwen2-architecture LM built locally, no hub needed.

The tokenizer is a byte-level BPE trained offline on the catalogue's titles (so titles
tokenize compactly) when a title task needs them, else on the prompt templates alone; the
catalogue's SID tokens are in the vocabulary from the start, so their rows get the same random
init as every other row. (Added later, they would start from the mean of the old rows,
transformers' ``mean_resizing``: all of them near-identical, a symmetric start for a
random-init model; docs/RESULTS.md.) The weights are random. Both are saved as an ordinary Hugging Face
checkpoint, so everything downstream treats ``tiny`` exactly like a local Qwen2.5 path.
Random weights mean LoRA on ``tiny`` learns little: full fine-tuning is its natural mode.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

EOS = "<|endoftext|>"
PAD = "<|pad|>"


@dataclass(frozen=True)
class TinySpec:
    """Shape of the tiny model; the defaults give ~2.9M parameters with the SID rows."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 512
    vocab_size: int = 2048  # BPE merges budget, before SID tokens are added
    max_positions: int = 1024
    attention_dropout: float = 0.0  # Qwen2's only dropout: on the attention probabilities
    seed: int = 0


def train_tokenizer(texts, vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no <unk>
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)


def build_tiny(out_dir, texts, spec: TinySpec = TinySpec(), extra_tokens=()) -> Path:
    """Train the tokenizer on ``texts``, add ``extra_tokens`` (the SIDs), build the random-init
    model, save both to ``out_dir``."""
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    tokenizer.add_tokens(list(extra_tokens), special_tokens=False)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        attention_dropout=spec.attention_dropout,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "minirec_tiny.json").write_text(json.dumps(spec.__dict__, indent=2) + "\n")
    return out_dir


def add_hidden_dropout(model, p: float) -> list:
    """Dropout on the residual stream while training: on the token embeddings and on each
    attention and MLP output before it is added back (GPT-2's embd/resid dropout; Qwen2 has only
    attention dropout). Forward hooks, so the saved checkpoint stays a plain Qwen2 model and
    evaluation (``model.eval()``) is untouched. Returns the hook handles."""
    import torch.nn.functional as F

    def drop(module, args, output):
        if not module.training:
            return output
        if isinstance(output, tuple):  # attention: (output, weights)
            return (F.dropout(output[0], p, True),) + output[1:]
        return F.dropout(output, p, True)

    modules = [model.get_input_embeddings()]  # a plain model: sft.py allows this for full fine-tuning only
    for layer in model.model.layers:
        modules += [layer.self_attn, layer.mlp]
    return [m.register_forward_hook(drop) for m in modules]
