"""Peak CPU memory of one constrained beam search as the prompts per call grow, with and without
the row cap (``max_rows``) of :mod:`minirec.beam`.

    python bench/beam_memory.py            # writes bench/results/beam_memory.json

An RL step rolls out all its groups (plus 2x the missed ones under dynamic sampling) in one call,
G beams per prompt; each decoding step then holds fp32 [rows x vocab] tensors, ~0.6 GB each per
1,024 rows at Qwen2.5's 151,936-token vocabulary. The model here is a 2-layer, 64-wide Qwen2
with that vocabulary and random weights (the memory does not depend on them); the trie holds
4,000 random 3-token SIDs. Each figure comes from a fresh subprocess: ``ru_maxrss`` after the call
minus ``ru_maxrss`` after a one-prompt warm-up, so it is the call's own high-water mark.
"""

import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

import fire
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

from minirec import beam
from minirec.beam import constrained_beam_search
from minirec.constrained import SIDTrie
from minirec.io import write_json

VOCAB, EOS, PAD = 151_936, 0, 1
MODES = ("uncapped", "capped")  # max_rows=10**9 (one call, as before the cap) / the default cap


def _setup(seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).eval()
    codes = torch.randint(0, 256, (4000, 3))
    sids = {(1000 + int(a), 2000 + int(b), 3000 + int(c)) for a, b, c in codes}
    return model, SIDTrie(sorted(sids), EOS, VOCAB, PAD)


def child(prompts: int, width: int, mode: str) -> None:
    """One measurement (run in its own process): prints the peak growth in MiB as JSON."""
    torch.set_num_threads(1)
    model, trie = _setup()
    ids = torch.randint(100, 900, (prompts, 40)).tolist()
    max_rows = 10**9 if mode == "uncapped" else None  # None: the default cap
    constrained_beam_search(model, ids[:1], trie, width, PAD, max_rows=max_rows)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    constrained_beam_search(model, ids, trie, width, PAD, max_rows=max_rows)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mib": round((after - before) / 1024, 1)}))  # ru_maxrss: KiB on Linux


def main(prompts=(8, 32, 128), width=16, out="bench/results/beam_memory.json"):
    rows = []
    for n in prompts:
        row = {"prompts": n, "rows": n * width}
        for mode in MODES:
            cmd = [sys.executable, __file__, "child", f"--prompts={n}", f"--width={width}", f"--mode={mode}"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row[f"{mode}_mib"] = json.loads(res.stdout.strip().splitlines()[-1])["peak_growth_mib"]
        rows.append(row)
        print(row, flush=True)
    result = {
        "vocab_size": VOCAB, "num_beams": width, "default_max_rows": beam.default_max_rows(VOCAB, width),
        "prompts_per_capped_call": beam.default_max_rows(VOCAB, width) // width,
        "model": "Qwen2, 2 layers, hidden 64, random weights; prompts of 40 tokens; 4,000 3-token SIDs",
        "measure": "ru_maxrss growth of one call after a one-prompt warm-up, fresh process per figure",
        "by_prompts": rows,
        "machine": f"{platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}",
    }
    write_json(Path(out), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    fire.Fire({"main": main, "child": child} if len(sys.argv) > 1 and sys.argv[1] == "child" else main)
