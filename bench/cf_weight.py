"""Choose evaluate.py's --cf_weight on valid: CF-guided beam search at each weight of a grid, and,
for comparison, the simpler union re-rank at the same weights.

    python bench/cf_weight.py --model_path out/sft_full --cf_model out/baselines/sasrec --split valid \
        --weights 0,0.25,0.5,1,1.5,2

* ``step`` (what evaluate.py --cf_weight does): every beam step ranks a prefix by the model's summed
  log-probability plus W x the teacher's log-probability of the prefix; one decode per weight.
* ``union``: the plain beam's top-N SIDs and the teacher's top-N SIDs, each scored by the model's
  exact log-probability (teacher forced) plus W x the teacher's; sorted, cut to N. One decode.

Reports HR@10 / NDCG@10 per (mode, W), overall, on repeat rows and on new rows, and the best of each
mode by HR@10 + NDCG@10 (SFT's selection criterion), in bench/results/cf_weight.json. ``--repeat_prior P``
adds the re-purchase prior on top of each setting, as evaluate.py composes them. Test is refused:
a weight chosen on test would report an optimistic test number.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, no install needed

from bench.repeat_bonus import scored  # noqa: E402
from minirec.data import load_dataset  # noqa: E402
from minirec.decoding import build_trie, cf_guidance, rank_sids  # noqa: E402
from minirec.distributed import to_process_device  # noqa: E402
from minirec.io import write_json  # noqa: E402
from minirec.repeats import add_history_items, repeat_rates, sid_scores  # noqa: E402
from minirec.teacher import load_teacher  # noqa: E402

SPLITS = ("train", "valid")  # never test: the weight is chosen here


def union_rerank(model, tokenizer, catalogue, histories, beam, teacher_sids, weight, lm_cache, run, batch_size):
    """Both top-N lists, scored by the model exactly plus ``weight`` x the teacher; best N kept.
    ``teacher_sids``: per row, {SID: teacher log-probability} over the union of the two lists."""
    n = max(len(row) for row in beam)
    missing = [[s for s in row if s not in lm_cache[i]] for i, row in enumerate(teacher_sids)]
    if any(missing):
        extra = sid_scores(model, tokenizer, catalogue, histories, missing, run.template, run.max_history, batch_size)
        for i, row in enumerate(extra):
            lm_cache[i].update(row)
    out = []
    for i, row in enumerate(teacher_sids):
        fused = {s: lm_cache[i][s] + weight * cf for s, cf in row.items()}
        out.append(sorted(fused.items(), key=lambda kv: -kv[1])[:n])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_path", required=True, help="a finished run dir (it holds run.json)")
    p.add_argument("--cf_model", required=True, help="a python -m minirec.baselines sasrec output dir")
    p.add_argument("--split", default="valid", help="valid (or train); test is refused")
    p.add_argument("--num_beams", type=int, default=50)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_rows", type=int, default=0, help="the first N rows of the split (0 = all)")
    p.add_argument("--weights", default="0,0.25,0.5,1,1.5,2", help="comma-separated weights W >= 0")
    p.add_argument("--modes", default="step,union", help="step (per-step fusion), union (re-rank), or both")
    p.add_argument("--repeat_prior", type=float, default=0.0, help="the re-purchase prior on top (0 = off)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "cf_weight.json"))
    a = p.parse_args(argv)
    if a.split not in SPLITS:
        p.error(f"--split {a.split!r}: choose {' or '.join(SPLITS)}; the weight is chosen on valid, never on test")
    weights = [float(w) for w in a.weights.split(",") if w.strip()]
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not weights or min(weights) < 0 or not modes or set(modes) - {"step", "union"}:
        p.error("--weights: a comma list of numbers >= 0; --modes: step and/or union")
    if a.repeat_prior and a.split == "train":
        p.error("--repeat_prior on --split train: the rates come from the train split; use valid")

    from minirec.errors import MinirecError
    from minirec.modeling.loading import load_trained

    model, tokenizer, run = load_trained(a.model_path)
    to_process_device(model)
    data = load_dataset(run.data_dir, splits=(a.split, "train") if a.repeat_prior else (a.split,))
    run.check_index(data.catalogue)
    catalogue, rows = data.catalogue, data.split(a.split)[: a.max_rows or None]
    try:
        teacher = load_teacher(a.cf_model, catalogue)
    except MinirecError as e:
        p.error(str(e))
    histories = [r.history for r in rows]
    rates = repeat_rates(data.split("train"), catalogue, run.max_history) if a.repeat_prior else None
    trie = build_trie(model, tokenizer, catalogue)

    def decode(weight):
        cf = cf_guidance(teacher, tokenizer, catalogue, trie, weight) if weight else None
        started = time.perf_counter()
        ranked = rank_sids(model, tokenizer, catalogue, histories, run.template, run.max_history, a.num_beams,
                           a.batch_size, trie=trie, cf=cf)
        return ranked, time.perf_counter() - started, cf

    def prior(ranked, cf):
        return add_history_items(model, tokenizer, catalogue, histories, ranked, run.template, run.max_history,
                                 a.batch_size, 0.0, 1.0, a.repeat_prior, rates, cf)

    grid, plain, seconds = [], None, {}
    for weight in weights:
        if "step" in modes or weight == 0:
            ranked, secs, cf = decode(weight)
            seconds[f"step {weight:g}"] = round(secs, 2)
            if weight == 0:
                plain = ranked
            grid.append({"mode": "step", "weight": weight, "seconds": round(secs, 2),
                         **scored(prior(ranked, cf), rows, catalogue, run.max_history)})
    if "union" in modes:
        plain = plain or decode(0.0)[0]
        n = max(len(row) for row in plain)
        beam_sids = [[s for s, _ in row] for row in plain]
        beam_cf = teacher.sid_logp(histories, catalogue, beam_sids)
        teacher_sids = [{**{s: row[s] for s in sids}, **dict(top)} for sids, row, top in
                        zip(beam_sids, beam_cf, teacher.top_sids(histories, catalogue, n))]
        lm_cache = [dict(row) for row in plain]
        for weight in weights:
            started = time.perf_counter()
            ranked = union_rerank(model, tokenizer, catalogue, histories, plain, teacher_sids, weight, lm_cache, run,
                                  a.batch_size)
            cf = cf_guidance(teacher, tokenizer, catalogue, trie, weight) if weight else None
            grid.append({"mode": "union", "weight": weight, "seconds": round(time.perf_counter() - started, 2),
                         **scored(prior(ranked, cf), rows, catalogue, run.max_history)})
    best = {m: max((g for g in grid if g["mode"] == m), key=lambda g: (g["HR@10"] + g["NDCG@10"], -g["weight"]))
            for m in modes}
    result = {"model_path": str(a.model_path), "cf_model": teacher.describe(), "split": a.split, "rows": len(rows),
              "num_beams": a.num_beams, "repeat_prior": a.repeat_prior, "best": best, "grid": grid}
    write_json(Path(a.out), result)
    print(f"{'mode':>5} {'W':>5} {'HR@10':>7} {'NDCG@10':>7} {'HR rep':>7} {'HR new':>7} {'s':>6}")
    for g in grid:
        rep, new = (f"{g[k]:.4f}" if g[k] is not None else "n/a" for k in ("HR@10_repeat", "HR@10_new"))
        print(f"{g['mode']:>5} {g['weight']:>5g} {g['HR@10']:>7.4f} {g['NDCG@10']:>7.4f} {rep:>7} {new:>7} "
              f"{g['seconds']:>6.1f}")
    print(json.dumps({"best": best}))
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
