"""minirec's RQ-VAE or vector-quantize-pytorch's ResidualVQ: which SID index is better? One run.

    python bench/sid_index_comparison.py                                  # the comparison (~35 min, 1 thread)
    python bench/sid_index_comparison.py --embeddings data/Industrial_rqvae/item_embeddings.npy  # reuse a cache
    python bench/sid_index_comparison.py --quick                          # smoke test (~2 min)
    python bench/sid_index_comparison.py --eval_rows 1500                 # evaluate the first 1,500 valid rows
    python bench/sid_index_comparison.py --methods rqvae,rqvae_vqp,shipped    # plus the shipped index

Builds Industrial's index with ``python -m minirec.sid build --method rqvae`` and ``--method
rqvae_vqp`` from the same MiniLM item embeddings (computed once, before the builds, so neither
build's wall time holds them; ``--embeddings`` copies an existing cache and its sidecar in),
seed, levels and codebook size. Then per index: the same short SFT, ``scripts/sft_full.sh`` (the
tiny default's recipe) with ``--epochs`` instead of 8, and an evaluation on all valid rows (beam
50; the test split stays untouched). Reports per method the collision rate before
deduplication, per-level codes used, utilization and perplexity (the quantizer's own codes, and
after collision handling), the build's wall time (and the quantizer's share), and valid HR@10 /
NDCG@10. Writes ``bench/results/sid_rqvae_comparison.json`` and prints a table.

Resumes: an index, SFT run or evaluation already in ``--work`` is reused, and an unfinished SFT
continues from its last checkpoint; ``--work`` remembers the settings it was made with and
refuses others. ``--quick`` (its own work dir and output) trains each RQ-VAE 10 epochs, SFT one
epoch on 500 train rows (valid loss on 200), and evaluates 100 valid rows: wiring, not quality.
``bench/results/sid_index_comparison.json`` is this bench's earlier form (shipped vs rqvae, the
old recipe, test split), kept as the record RESULTS.md cites.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, no install needed

from minirec.sid.catalogue import load_items  # noqa: E402
from minirec.sid.text import embed_items  # noqa: E402

DATA = ROOT / "data" / "Industrial_and_Scientific"
BUILT = ("rqvae", "rqvae_vqp")
QUICK = {"epochs": 1, "rqvae_epochs": 10, "max_train_rows": 500, "max_valid_rows": 200, "eval_rows": 100,
         "select_rows": 100}


def _run(args, env=None) -> float:
    """Run a command in the checkout; its wall time in seconds."""
    print("+", " ".join(map(str, args)), flush=True)
    start = time.perf_counter()
    subprocess.run(list(map(str, args)), cwd=ROOT, check=True, env={**os.environ, **(env or {})})
    return round(time.perf_counter() - start, 2)


def _guard(work: Path, settings: dict) -> None:
    """A work dir holds runs made with one set of settings; resuming with others would mix them."""
    path = work / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        sys.exit(f"error: {work} was made with other settings ({path}); pass another --work or delete it")
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def embeddings_cache(work: Path, embeddings: str) -> Path:
    """The one embeddings cache both builds read: copied from ``embeddings`` or computed here."""
    cache = work / "item_embeddings.npy"
    if embeddings and not cache.is_file():
        shutil.copyfile(embeddings, cache)
        shutil.copyfile(f"{embeddings}.json", f"{cache}.json")
    embed_items(load_items(DATA / "item.json"), cache=cache)  # reuses a matching cache, else embeds
    return cache


def build(method: str, work: Path, cache: Path, s: dict) -> dict:
    """Build ``method``'s index once; its report, with the build command's wall time."""
    index, timing = work / method / "index.json", work / method / "build_wall.json"
    if not (index.is_file() and timing.is_file()):
        wall = _run([sys.executable, "-m", "minirec.sid", "build", "--items", DATA / "item.json", "--method", method,
                     "--levels", s["levels"], "--codebook_size", s["codebook_size"], "--seed", s["seed"],
                     "--rqvae_epochs", s["rqvae_epochs"], "--embeddings_cache", cache, "--out", index, "--overwrite", "True"])
        timing.write_text(json.dumps({"build_wall_s": wall}) + "\n")
    return {**json.loads(index.with_name("index.report.json").read_text()), **json.loads(timing.read_text())}


def dataset(method: str, work: Path) -> Path:
    """Industrial's splits and items with ``method``'s index."""
    if method == "shipped":
        return DATA
    data = work / f"data_{method}"
    if not (data / "index.json").is_file():
        data.mkdir(parents=True, exist_ok=True)
        for name in ("train.inter", "valid.inter", "test.inter", "item.json"):
            shutil.copyfile(DATA / name, data / name)
        shutil.copyfile(work / method / "index.json", data / "index.json")
    return data


def train_and_evaluate(method: str, work: Path, s: dict) -> dict:
    """The short SFT (scripts/sft_full.sh, fewer epochs) and the valid evaluation; reused when done."""
    run = work / f"sft_{method}"
    if not (run / "run.json").is_file():
        resume = ["--resume_from_checkpoint", "last"] if any(run.glob("checkpoint-*")) else []
        small = ("max_train_rows", "max_valid_rows", "select_rows")
        extra = [arg for k in small for arg in (f"--{k}", s[k])] if s["quick"] else []
        _run(["bash", "scripts/sft_full.sh", f"DATA={dataset(method, work)}", f"OUT={run}", f"EPOCHS={s['epochs']}",
              f"SEED={s['seed']}", "--report_to", "none", "--greedy_eval_rows", 0, *extra, *resume],
             env={"PYTHON": sys.executable})
    metrics = run / "eval_valid" / "metrics.json"
    if not metrics.is_file():
        _run([sys.executable, "evaluate.py", "--model_path", run, "--split", "valid", "--num_beams", 50,
              "--max_rows", s["eval_rows"]])
    m, sft = json.loads(metrics.read_text()), json.loads((run / "metrics.json").read_text())
    return {**{k: round(m[k], 4) for k in ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR", "coverage@10")},
            "invalid_predictions": m["invalid_predictions"], "valid_rows": m["rows"],
            "eval_wall_s": m["wall_seconds"], "sft_train_s": round(sft["train_seconds"], 1),
            "sft_best_checkpoint": sft["best_checkpoint"]}


def index_summary(report: dict) -> dict:
    """What the comparison reads from a build report."""
    def levels(rows):
        return [{k: lv[k] for k in ("level", "codes_used", "utilization", "perplexity", "max_items_per_code")}
                for lv in rows]

    return {"collision_rate_before": report["collisions_before"]["collision_rate"],
            "collisions_before": report["collisions_before"], "collisions_after": report["collisions_after"],
            "reassigned_on_last_level": report["reassigned_on_last_level"],
            "needed_extra_level": report["needed_extra_level"],
            "per_level_before_collisions": levels(report["per_level_before_collisions"]),
            "per_level": levels(report["per_level"]), "build_wall_s": report["build_wall_s"],
            "quantize_s": report["timings_s"]["quantize"], "quantizer": report["quantizer"]}


def table(results: dict) -> str:
    rows = ["| method | collisions before | utilization a/b/c | perplexity a/b/c | build s | valid HR@10 | NDCG@10 |",
            "|---|---:|---|---|---:|---:|---:|"]
    for name, r in results.items():
        idx, v = r["index"], r["valid"]
        cells = ["-"] * 4
        if idx:
            lv = idx["per_level_before_collisions"]
            cells = [f"{idx['collision_rate_before']:.2%}", "/".join(f"{x['utilization']:.2f}" for x in lv),
                     "/".join(f"{x['perplexity']:.0f}" for x in lv), str(idx["build_wall_s"])]
        rows.append(f"| {name} | {' | '.join(cells)} | {v['HR@10']:.4f} | {v['NDCG@10']:.4f} |")
    return "\n".join(rows)


def main(methods="rqvae,rqvae_vqp", epochs=3, rqvae_epochs=300, levels=3, codebook_size=256, seed=42,
         embeddings="", quick=False, work="", out="", eval_rows=0):
    names = [m.strip() for m in str(methods).split(",") if m.strip()]
    if not names or set(names) - {*BUILT, "shipped"}:
        sys.exit(f"error: --methods {methods}: choose from {', '.join(BUILT)}, shipped")
    s = {"methods": names, "epochs": epochs, "rqvae_epochs": rqvae_epochs, "levels": levels,
         "codebook_size": codebook_size, "seed": seed, "quick": bool(quick), "eval_rows": eval_rows,
         "max_train_rows": 0, "max_valid_rows": 0, "select_rows": 1000}
    if quick:
        s.update(QUICK)
    work = ROOT / (work or ("runs/sid_compare_quick" if quick else "runs/sid_rqvae_compare"))
    _guard(work, {k: v for k, v in s.items() if k != "methods"})
    cache = embeddings_cache(work, embeddings)
    results = {}
    for name in names:  # every index first: a failing build stops the run before any training
        results[name] = {"index": index_summary(build(name, work, cache, s)) if name != "shipped" else None}
    for name in names:
        results[name]["valid"] = train_and_evaluate(name, work, s)
    summary = {
        "what": (f"Industrial, MiniLM embeddings, levels {levels}, codebook {codebook_size}, seed {seed}, RQ-VAE "
                 f"{s['rqvae_epochs']} epochs; scripts/sft_full.sh with {s['epochs']} epochs; valid split "
                 f"({s['eval_rows'] or 'all'} rows), beam 50"
                 + (" (QUICK: a smoke test, not a result)" if quick else "")),
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "results": results,
    }
    path = Path(out) if out else (work / "summary.json" if quick else ROOT / "bench/results/sid_rqvae_comparison.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(table(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    fire.Fire(main)
