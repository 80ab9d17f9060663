"""Constrained decoding benchmark: minirec's batched beam search against Hugging Face generate.

    python bench/constrained_decoding.py --model_path out/sft_full --rows 500 --num_beams 50

Same model, same rows, same beam width, one process, in one run:
  (a)  minirec: prompts encoded once, KV cache expanded, vectorized SID trie mask
  (a') the same decoder with the constraint switched off (every token allowed)
  (b)  HF generate(num_beams=K) with prefix_allowed_tokens_fn backed by a prefix dict
  (c)  HF generate(num_beams=K) unconstrained
Writes bench/results/constrained_decoding.json with seconds per 1,000 rows, the ratios
(b)/(a) and (a)/(a'), and how many rows have identical top-10 lists in (a) and (b).
"""

import json
import platform
import sys
import time
from pathlib import Path

import fire
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

from minirec.data import load_dataset
from minirec.decoding import build_trie, decode_sid, rank_sids
from minirec.io import write_json
from minirec.modeling.loading import load_trained
from minirec.prompts import next_sid_prompt
from minirec.tokenization import encode_prompts


class Unconstrained:
    """Stands in for the trie: allows every token, so (a') times the decoder alone."""

    def __init__(self, trie):
        self.max_depth, self.vocab_size, self.eos_token_id = trie.max_depth, trie.vocab_size, trie.eos_token_id

    def allowed_mask(self, generated):
        return torch.ones((generated.shape[0], self.vocab_size), dtype=torch.bool, device=generated.device)


def hf_generate(model, tokenizer, prompts, num_beams, max_new_tokens, batch_size, prefix_fn=None):
    tokenizer.padding_side = "left"
    out_lists = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer.pad({"input_ids": prompts[start : start + batch_size]}, return_tensors="pt")
        width = enc["input_ids"].shape[1]
        fn = (lambda b, ids: prefix_fn(ids[width:].tolist())) if prefix_fn else None
        out = model.generate(**enc, num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
                             max_new_tokens=max_new_tokens, prefix_allowed_tokens_fn=fn, early_stopping=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             top_k=None, top_p=None, temperature=None, length_penalty=1.0)
        seqs = [decode_sid(tokenizer, s[width:]) for s in out]
        out_lists += [seqs[i : i + num_beams] for i in range(0, len(seqs), num_beams)]
    return out_lists


def prefix_dict(catalogue, tokenizer):
    """The usual approach: every SID prefix (as a tuple of ids) -> allowed next ids."""
    table = {}
    for items in catalogue.items_by_sid.values():
        ids = tokenizer.convert_tokens_to_ids(list(catalogue.sids[items[0]]))
        for i in range(len(ids)):
            table.setdefault(tuple(ids[:i]), set()).add(ids[i])
        table.setdefault(tuple(ids), set()).add(tokenizer.eos_token_id)
    table = {k: sorted(v) for k, v in table.items()}
    eos = [tokenizer.eos_token_id]
    return lambda prefix: table.get(tuple(t for t in prefix if t != tokenizer.pad_token_id), eos)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(model_path="out/sft_full", split="test", rows=500, num_beams=50, batch_size=8,
         out="bench/results/constrained_decoding.json"):
    torch.manual_seed(0)
    model, tokenizer, run = load_trained(model_path)
    model.eval()
    data = load_dataset(run.data_dir, splits=(split,))
    cat = data.catalogue
    histories = [r.history for r in data.split(split)[:rows]]
    trie = build_trie(model, tokenizer, cat)
    prompts = encode_prompts(tokenizer, [next_sid_prompt(h, cat, run.template, run.max_history) for h in histories])
    common = dict(template=run.template, max_history=run.max_history, num_beams=num_beams, batch_size=batch_size)

    a, t_a = timed(lambda: rank_sids(model, tokenizer, cat, histories, trie=trie, **common))
    _, t_a0 = timed(lambda: rank_sids(model, tokenizer, cat, histories, trie=Unconstrained(trie), **common))
    b, t_b = timed(lambda: hf_generate(model, tokenizer, prompts, num_beams, trie.max_depth + 1, batch_size,
                                       prefix_dict(cat, tokenizer)))
    _, t_c = timed(lambda: hf_generate(model, tokenizer, prompts, num_beams, trie.max_depth + 1, batch_size))

    a_lists = [[s for s, _ in row] for row in a]
    same = sum(x[:10] == y[:10] for x, y in zip(a_lists, b))
    # A differing list is acceptable only where (a) has an exact score tie inside its top 10.
    ties = sum(x[:10] != y[:10] and len({round(s, 5) for _, s in row[:11]}) < min(len(row), 11)
               for x, y, row in zip(a_lists, b, a))
    per_k = lambda t: round(1000 * t / len(histories), 2)  # noqa: E731
    result = {
        "model_path": str(model_path), "rows": len(histories), "num_beams": num_beams, "batch_size": batch_size,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds_per_1000_rows": {"a_minirec": per_k(t_a), "a_prime_minirec_unconstrained": per_k(t_a0),
                                  "b_hf_prefix_allowed_tokens_fn": per_k(t_b), "c_hf_unconstrained": per_k(t_c)},
        "ratio_b_over_a": round(t_b / t_a, 2),
        "ratio_a_over_a_prime": round(t_a / t_a0, 3),
        "top10_identical_rows": same, "top10_differing_rows_with_score_ties": ties,
        "invalid_in_a": sum(s not in cat.items_by_sid for row in a_lists for s in row),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    write_json(Path(out), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    fire.Fire(main)
