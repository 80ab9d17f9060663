"""Does a SID index built by minirec beat the shipped one? Same SFT, same evaluation, one run.

    python bench/sid_index_comparison.py --method rqvae --epochs 6

Builds ``--method``'s index from the Industrial item texts (embeddings cached), trains the tiny
default on next-SID prediction once with the shipped index and once with the new one (full
fine-tuning: the random-init tiny base learns little through LoRA), evaluates both on test
(beam 50) and writes bench/results/sid_index_comparison.json. Existing run dirs are reused,
so an interrupted comparison resumes where it stopped.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "Industrial_and_Scientific"


def _run(*args):
    print("+", " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, check=True)


def main(method="rqvae", epochs=6, lr=2e-3, work="runs/sid_compare", out="bench/results/sid_index_comparison.json"):
    work = ROOT / work
    index = work / method / "index.json"
    if not index.is_file():
        _run("-m", "minirec.sid", "build", "--items", DATA / "item.json", "--method", method, "--levels", 3,
             "--codebook_size", 256, "--seed", 42, "--embeddings_cache", work / "minilm.npy", "--out", index)
    new_data = work / f"data_{method}"
    if not (new_data / "index.json").is_file():
        new_data.mkdir(parents=True, exist_ok=True)
        for name in ("train.inter", "valid.inter", "test.inter", "item.json"):
            shutil.copyfile(DATA / name, new_data / name)
        shutil.copyfile(index, new_data / "index.json")

    results = {}
    for name, data in (("shipped", DATA), (method, new_data)):
        run = work / f"sft_{name}"
        if not (run / "run.json").is_file():
            _run("sft.py", "--data_dir", data, "--output_dir", run, "--tasks", "next_sid", "--num_epochs", epochs,
                 "--learning_rate", lr, "--greedy_eval_rows", 0, "--report_to", "none")
        if not (run / "eval_test" / "metrics.json").is_file():
            _run("evaluate.py", "--model_path", run, "--split", "test", "--num_beams", 50)
        m = json.loads((run / "eval_test" / "metrics.json").read_text())
        results[name] = {k: round(m[k], 4) for k in ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR", "coverage@10")}
        results[name]["invalid_predictions"] = m["invalid_predictions"]
        results[name]["best_valid_loss"] = round(json.loads((run / "metrics.json").read_text())["final_eval"]["eval_loss"], 4)
    report = json.loads(index.with_name("index.report.json").read_text())
    summary = {
        "what": f"tiny default, full FT, next_sid only, {epochs} epochs, lr {lr}; test split, beam 50",
        "results": results,
        "ratio_HR@10": round(results[method]["HR@10"] / results["shipped"]["HR@10"], 3),
        "ratio_NDCG@10": round(results[method]["NDCG@10"] / results["shipped"]["NDCG@10"], 3),
        "index": {k: report[k] for k in ("method", "timings_s", "collisions_before", "collisions_after",
                                         "reassigned_on_last_level", "needed_extra_level", "per_level")},
    }
    path = ROOT / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["results"], indent=2))


if __name__ == "__main__":
    fire.Fire(main)
