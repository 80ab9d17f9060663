"""Prompt/completion -> token ids, the same way for SFT, RL and evaluation.

The prompt is encoded on its own (with the tokenizer's usual special tokens, e.g. a BOS
for Llama-style bases) and the completion on its own, then concatenated. Encoding them
separately means the prompt tokens at generation time are exactly the ones seen in
training, so the model never has to continue a BPE merge across the boundary.
"""

from minirec.prompts import ITEM_END

IGNORE_INDEX = -100


def encode_prompts(tokenizer, prompts) -> list[list[int]]:
    """Prompt texts -> ids; an item-end marker (template ``sids``) becomes the EOS token."""
    prompts = [p.replace(ITEM_END, tokenizer.eos_token) for p in prompts]
    return tokenizer(prompts, add_special_tokens=True)["input_ids"]


def encode_examples(tokenizer, examples, cutoff_len: int) -> dict:
    """Examples -> ``input_ids`` and ``labels`` (loss on completion + EOS only).

    Too-long rows lose the *oldest* prompt tokens: the end of a history matters most.
    """
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples])
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    input_ids, labels = [], []
    for p, c in zip(prompts, completions):
        c = c[: cutoff_len - 2] + [tokenizer.eos_token_id]
        p = p[-(cutoff_len - len(c)):]
        input_ids.append(p + c)
        labels.append([IGNORE_INDEX] * len(p) + c)
    return {"input_ids": input_ids, "labels": labels}


def encode_sequence_examples(tokenizer, examples) -> dict:
    """Dense rows (:class:`minirec.prompts.SequenceExample`) -> ``input_ids`` and ``labels``.

    Each completion is its SID tokens + EOS and is a target; the context is not. The ids are
    the ones an interaction row of the same history would have for the row's first target (a test
    checks it); a later target also sees the earlier targets of its row, so more context than an
    interaction row (up to ``2 * max_history - 1`` items, see ``build_sequence_examples``).
    """
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples])
    flat = [c for e in examples for c in e.completions]
    pieces = iter(tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else [])
    input_ids, labels = [], []
    for e, p in zip(examples, prompts):
        targets = [t for _ in e.completions for t in next(pieces) + [tokenizer.eos_token_id]]
        input_ids.append(p + targets)
        labels.append([IGNORE_INDEX] * len(p) + targets)
    return {"input_ids": input_ids, "labels": labels}


class CompletionCollator:
    """Right-pads a batch of ``input_ids``/``labels``; padding never counts in the loss."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, batch):
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        width = -(-width // self.multiple) * self.multiple
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
