"""Constrained decoding benchmark: minirec's beam search before and after the shared-prefix
decoder, Hugging Face generate, and an RL step before and after.

    python bench/constrained_decoding.py --model_path runs/s42_F --rows 4533 --num_beams 50 \
        [--exhaustive_rows 200] [--rl_steps 10] [--hf True]

Same model, same rows, same beam width, one process, in one run:
  (a0) before: minirec's expanded-cache decoder (each prompt's KV cache copied to K rows, extended
       and reordered every step; minirec.beam keeps it as the fallback for flash attention). It
       runs through today's candidate step, which made it ~9 % faster than the decoder it was
       (500 test rows, CPU time), so (a0)/(a) understates the gain over that decoder a little.
  (a)  after: the shared-prefix decoder (one cache row per prompt, a 4D ancestor mask)
  (a') (a) with the constraint switched off (every token allowed)
  (b)  HF generate(num_beams=K) with prefix_allowed_tokens_fn backed by a prefix dict (--hf)
  (c)  HF generate(num_beams=K) unconstrained (--hf)
(a0) and (a) run alternately ``repeats`` times over all rows through ``rank_sids`` (what
evaluate.py calls), so both see the same machine load; each keeps its fastest pass, in wall
seconds and in this process's CPU seconds (steadier when other jobs share the machine).
Rankings: (a) against (a0) on every row (the same top-K SIDs, the largest score difference), and
with --exhaustive_rows N, (a)'s top 10 against the exact top 10 from scoring every catalogue SID.
--rl_steps N: seconds per RL step, each decoder (scripts/rl_full.sh's recipe, no in-training
evaluation). Writes bench/results/constrained_decoding.json (seconds per 1,000 rows, ratios).
"""

import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import fire
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

from minirec import beam
from minirec.data import load_dataset
from minirec.decoding import build_trie, decode_sid, rank_sids
from minirec.io import write_json
from minirec.modeling.loading import load_trained
from minirec.prompts import next_sid_prompt
from minirec.tokenization import encode_prompts


class Unconstrained:
    """Stands in for the trie: every token is a candidate column, always allowed, so (a') times
    the decoder alone."""

    def __init__(self, trie):
        self.max_depth, self.vocab_size, self.eos_token_id = trie.max_depth, trie.vocab_size, trie.eos_token_id
        self.columns = torch.arange(trie.vocab_size, device=trie.columns.device)

    def allowed_columns(self, generated):
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
    """-> (result, wall seconds, CPU seconds of this process: steadier on a shared machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu


def decoder(cls):
    """Every beam search inside the block uses decoder class ``cls``."""
    return mock.patch.object(beam, "_decoder_for", lambda model: cls)


def compare_rankings(after, before, tol=1e-4):
    """Rows whose ranked SID lists are identical (scores within ``tol``); rows whose lists differ
    only where scores tie within ``tol`` (a swapped pair; a SID in one list only if it ties the
    last rank); and the largest score difference of one SID in both lists."""
    same = ties = 0
    worst = 0.0
    for x, y in zip(after, before):
        sx, sy = dict(x), dict(y)
        worst = max([worst] + [abs(sx[k] - sy[k]) for k in sx.keys() & sy.keys()])
        at_cutoff = all(abs({**sx, **sy}[k] - x[-1][1]) <= tol for k in sx.keys() ^ sy.keys())
        close = len(x) == len(y) and at_cutoff and all(abs(a[1] - b[1]) <= tol for a, b in zip(x, y))
        if [k for k, _ in x] == [k for k, _ in y]:
            same += close
        else:
            ties += close
    return {"rows_identical": same, "rows_differing_only_among_tied_scores": ties,
            "max_score_diff": float(f"{worst:.3g}")}


@torch.no_grad()
def exhaustive_top(model, prompt, sids, eos, k=10, chunk=1024):
    """The exact top ``k`` (score, SID) after ``prompt``: every SID + EOS scored against a copy of
    the prompt's cache (no trie, no beam), summed log-probabilities as the beam search sums them."""
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    first = out.logits[0, -1].float().log_softmax(-1)
    scored = []
    for start in range(0, len(sids), chunk):
        part = sids[start : start + chunk]
        depth = max(map(len, part))
        toks = torch.tensor([list(s) + [eos] * (depth + 1 - len(s)) for s in part])  # after EOS: unread
        cache = copy.deepcopy(out.past_key_values)
        cache.batch_repeat_interleave(len(part))
        logp = model(input_ids=toks[:, :depth], past_key_values=cache).logits.float().log_softmax(-1)
        step = logp.gather(-1, toks[:, 1:, None])[..., 0]  # log p(next SID token or EOS)
        scored += [(float(first[s[0]] + step[i, : len(s)].sum()), s) for i, s in enumerate(part)]
    return sorted(scored, reverse=True)[:k]


def exactness(model, tokenizer, prompts, ranked, trie, k=10):
    """Rows where the beam's top ``k`` SIDs are the exhaustive top ``k``, and the largest score gap."""
    sids = trie.sequences()
    hits, worst = 0, 0.0
    for prompt, row in zip(prompts, ranked):
        exact = [(decode_sid(tokenizer, s), score) for score, s in exhaustive_top(model, prompt, sids, trie.eos_token_id, k)]
        hits += [s for s, _ in exact] == [s for s, _ in row[:k]]
        worst = max([worst] + [abs(a[1] - b[1]) for a, b in zip(exact, row)])
    return {"rows": len(prompts), "top10_exact_rows": hits, "max_score_diff": float(f"{worst:.3g}")}


def rl_step_seconds(model_path, steps, cls):
    """One RL run of ``steps`` steps (scripts/rl_full.sh's recipe) with decoder ``cls`` ->
    (wall seconds per step, CPU seconds per step inside beam search: rollouts and refills)."""
    from minirec.rl.config import RLConfig
    from minirec.rl.train import train

    spent, search = [0.0], beam._beam_search

    def timed_search(*args):
        start = time.process_time()
        try:
            return search(*args)
        finally:
            spent[0] += time.process_time() - start

    with tempfile.TemporaryDirectory() as tmp, decoder(cls), mock.patch.object(beam, "_beam_search", timed_search):
        config = RLConfig(model_path=str(model_path), output_dir=f"{tmp}/rl", max_steps=steps, learning_rate=2e-5,
                          dynamic_sampling=True, max_prompts=2400, eval_rows=8, save_steps=10**6, report_to="none")
        # (the evaluation always runs: 8 rows at the start and the end keep it out of the step time)
        per_step = train(config)["seconds_per_step"]
    return per_step, round(spent[0] / steps, 3)


def rl_before_after(model_path, steps, repeats):
    """RL runs alternating between the decoders; each keeps its fastest run."""
    runs = {"before": [], "after": []}
    for _ in range(repeats):
        for name, cls in (("before", beam._ExpandedDecoder), ("after", beam._SharedPrefixDecoder)):
            runs[name].append(rl_step_seconds(model_path, steps, cls))
    best = {name: min(r) for name, r in runs.items()}
    return {"steps_per_run": steps, "runs_per_decoder": repeats,
            "seconds_per_step": {name: b[0] for name, b in best.items()},
            "beam_search_cpu_seconds_per_step": {name: b[1] for name, b in best.items()},
            "step_speedup": round(best["before"][0] / best["after"][0], 2)}


def main(model_path="out/sft_full", split="test", rows=500, num_beams=50, batch_size=16, repeats=2,
         exhaustive_rows=0, rl_steps=0, hf=False, out="bench/results/constrained_decoding.json"):
    torch.manual_seed(0)
    model, tokenizer, run = load_trained(model_path)
    model.eval()
    data = load_dataset(run.data_dir, splits=(split,))
    cat = data.catalogue
    histories = [r.history for r in data.split(split)[:rows]]
    trie = build_trie(model, tokenizer, cat)
    prompts = encode_prompts(tokenizer, [next_sid_prompt(h, cat, run.template, run.max_history) for h in histories])
    common = dict(template=run.template, max_history=run.max_history, num_beams=num_beams, batch_size=batch_size,
                  progress=False)
    per_k = lambda t: round(1000 * t / len(histories), 2)  # noqa: E731

    passes, ranked_by = {"before": [], "after": []}, {}  # (wall, cpu) seconds of each pass
    for _ in range(repeats):
        for name, cls in (("before", beam._ExpandedDecoder), ("after", beam._SharedPrefixDecoder)):
            with decoder(cls):
                ranked_by[name], *seconds = timed(lambda: rank_sids(model, tokenizer, cat, histories, trie=trie,
                                                                    **common))
            passes[name].append(seconds)
    a0, a = ranked_by["before"], ranked_by["after"]
    (t_a0, c_a0), (t_a, c_a) = [[min(t) for t in zip(*passes[k])] for k in ("before", "after")]
    _, t_a_prime, _ = timed(lambda: rank_sids(model, tokenizer, cat, histories, trie=Unconstrained(trie), **common))
    seconds = {"a0_before_expanded_cache": per_k(t_a0), "a_after_shared_prefix": per_k(t_a),
               "a_prime_after_unconstrained": per_k(t_a_prime)}
    result = {
        "model_path": str(model_path), "split": split, "rows": len(histories), "num_beams": num_beams,
        "batch_size": batch_size, "params": sum(p.numel() for p in model.parameters()),
        "seconds_per_1000_rows": seconds,
        "cpu_seconds_per_1000_rows": {"a0_before_expanded_cache": per_k(c_a0), "a_after_shared_prefix": per_k(c_a)},
        "passes_wall_cpu_seconds": {k: [[round(x, 2) for x in p] for p in v] for k, v in passes.items()},
        "speedup_before_over_after": {"wall": round(t_a0 / t_a, 2), "cpu": round(c_a0 / c_a, 2)},
        "ratio_a_over_a_prime": round(t_a / t_a_prime, 3),
        "rankings_after_vs_before": compare_rankings(a, a0),
        "invalid_in_a": sum(s not in cat.items_by_sid for row in a for s, _ in row),
    }
    if hf:
        a_lists = [[s for s, _ in row] for row in a]
        b, t_b, _ = timed(lambda: hf_generate(model, tokenizer, prompts, num_beams, trie.max_depth + 1, batch_size,
                                              prefix_dict(cat, tokenizer)))
        _, t_c, _ = timed(lambda: hf_generate(model, tokenizer, prompts, num_beams, trie.max_depth + 1, batch_size))
        seconds.update(b_hf_prefix_allowed_tokens_fn=per_k(t_b), c_hf_unconstrained=per_k(t_c))
        result.update(ratio_b_over_a=round(t_b / t_a, 2),
                      top10_identical_to_hf_rows=sum(x[:10] == y[:10] for x, y in zip(a_lists, b)))
    if exhaustive_rows:
        result["exhaustive_top10"] = exactness(model, tokenizer, prompts[:exhaustive_rows], a, trie)
    if rl_steps:
        result["rl"] = rl_before_after(model_path, rl_steps, repeats)
    result["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    write_json(Path(out), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    fire.Fire(main)
