"""Dataset preparation at scale: the pandas ``minirec.data.prepare`` against the row-by-row one it replaced.

    python bench/prepare_scale.py --events 10000000                 # new at 10M, old at 1M (default)
    python bench/prepare_scale.py --events 1000000 --old_events 1000000

Generates a synthetic Amazon-like event CSV (``user_id,parent_asin,rating,timestamp``):
users with 5-50 events (skewed towards few), Zipf item popularity, unix-second timestamps
spread over 2012-2023 per user, ratings skewed to 5, rows shuffled. Then runs, each in its
own subprocess, ``python -m minirec.data.prepare --kcore 5 --min_rating 2 --start 2013-01-01``
(chronological_global split, max_history 10):
  new @ --events;  old @ --old_events (the module from git revision --old_rev);  new @ --old_events
and compares old and new outputs byte for byte at --old_events. Wall time and peak RSS
(``os.wait4``'s ru_maxrss of that child alone) per run; events/s; the old/new ratio at the
common size. Writes bench/results/prepare_scale.json.
"""

import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--kcore", "5", "--min_rating", "2", "--start", "2013-01-01"]
ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUV", dtype=np.uint8)


def _encode(values, width):
    """Non-negative ints -> fixed-width base-32 ASCII, as an (n, width) uint8 array."""
    out = np.empty((len(values), width), dtype=np.uint8)
    v = values.astype(np.int64).copy()
    for col in range(width - 1, -1, -1):
        out[:, col] = ALPHABET[v % 32]
        v //= 32
    return out


def generate(path, n_events: int, seed: int = 0, zipf: float = 1.05):
    """Write ``n_events`` events to ``path`` (CSV) and the catalogue to ``path``.items.json."""
    rng = np.random.default_rng(seed)
    counts = 5 + np.floor(46 * rng.random(n_events // 5 + 1) ** 3).astype(np.int64)  # 5..50, mean ~16
    n_users = int(np.searchsorted(np.cumsum(counts), n_events)) + 1
    counts = counts[:n_users]
    counts[-1] -= counts.sum() - n_events
    n_items = max(50, n_events // 20)
    user = np.repeat(np.arange(n_users), counts)
    weights = 1.0 / np.arange(1, n_items + 1) ** zipf
    item = np.searchsorted(np.cumsum(weights) / weights.sum(), rng.random(n_events)).clip(0, n_items - 1)
    item = rng.permutation(n_items)[item]  # popularity unrelated to id order
    start = rng.integers(1_325_376_000, 1_672_531_200, n_users)  # 2012-01-01 .. 2023-01-01
    gaps = rng.exponential(20 * 86_400, n_events).astype(np.int64) + 1
    first = np.repeat(np.cumsum(counts) - counts, counts)
    cum = np.cumsum(gaps)
    stamp = start[user] + cum - cum[first]
    rating = rng.choice(np.array([b"1.0", b"2.0", b"3.0", b"4.0", b"5.0"]), n_events, p=[.05, .05, .1, .2, .6])
    order = rng.permutation(n_events)
    user_ids = np.hstack([np.full((n_users, 1), ord("A"), np.uint8), _encode(rng.integers(0, 2 ** 60, n_users), 12),
                          _encode(rng.permutation(n_users), 15)])  # 28 characters, like Amazon's
    item_ids = np.hstack([np.full((n_items, 2), np.frombuffer(b"B0", np.uint8)), _encode(np.arange(n_items), 8)])
    with open(path, "wb") as f:
        f.write(b"user_id,parent_asin,rating,timestamp\n")
        for lo in range(0, n_events, 1_000_000):
            rows = order[lo:lo + 1_000_000]
            comma = np.full((len(rows), 1), ord(","), np.uint8)
            line = np.hstack([user_ids[user[rows]], comma, item_ids[item[rows]], comma,
                              np.frombuffer(rating[rows].tobytes(), np.uint8).reshape(-1, 3), comma,
                              np.frombuffer(stamp[rows].astype("S10").tobytes(), np.uint8).reshape(-1, 10),
                              np.full((len(rows), 1), ord("\n"), np.uint8)])
            f.write(line.tobytes())
    items = {item_ids[i].tobytes().decode(): {"title": f"Item {i}", "description": ""} for i in range(n_items)}
    Path(f"{path}.items.json").write_text(json.dumps(items), encoding="utf-8")
    return {"events": n_events, "users": n_users, "items": n_items, "bytes": Path(path).stat().st_size}


def _generate_in_child(path, n_events: int) -> dict:
    """:func:`generate` in a spawned process, so this process stays small: a forked child starts
    with its parent's RSS high-water mark, which would floor every ``prepare`` child's peak RSS at
    the generator's memory (measured: a child of a 300 MB parent reports 312 MB)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(generate, (path, n_events))


def run(cmd, env=None):
    """Run ``cmd``; wall seconds and the peak RSS (MiB) of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "stdout": output.strip()[-400:]}


def prepare_cmd(module, csv, out):
    return [sys.executable, *module, "--interactions", str(csv), "--items", f"{csv}.items.json", "--out", str(out), *FLAGS]


def main(events: int = 10_000_000, old_events: int | None = None, old_rev: str = "dc65a8e", workdir: str | None = None,
         keep: bool = False, output: str = "bench/results/prepare_scale.json"):
    old_events = min(events, 1_000_000) if old_events is None else old_events
    work = Path(workdir or tempfile.mkdtemp(prefix="prepare_scale."))
    work.mkdir(parents=True, exist_ok=True)
    old_module = work / "prepare_old.py"
    old_source = subprocess.run(["git", "show", f"{old_rev}:minirec/data/prepare.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    # the old module ran its main through a minirec.cli.run_cli that no longer exists: run it with Fire
    old_module.write_text(old_source.replace("from minirec.cli import run_cli\n", "import fire\n")
                          .replace("    run_cli(main)", "    fire.Fire(main)"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the old module imports today's minirec (readers, io)
    result = {"events": events, "old_events": old_events, "old_rev": old_rev, "flags": " ".join(FLAGS), "runs": {}}
    sizes = [events] + ([old_events] if old_events != events else [])
    for n in sizes:
        t0 = time.perf_counter()
        result[f"data_{n}"] = {**_generate_in_child(work / f"events_{n}.csv", n), "generate_seconds": 0.0}
        result[f"data_{n}"]["generate_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"generated {n:,} events: {result[f'data_{n}']}", flush=True)
    runs = [("new", events)] + [("old", old_events)] + ([("new", old_events)] if old_events != events else [])
    for which, n in runs:
        module = ["-m", "minirec.data.prepare"] if which == "new" else [str(old_module)]
        r = run(prepare_cmd(module, work / f"events_{n}.csv", work / f"{which}_{n}"), env=env)
        r["events_per_second"] = round(n / r["seconds"])
        result["runs"][f"{which}@{n}"] = r
        print(f"{which} @ {n:,} events: {r['seconds']} s, peak RSS {r['peak_rss_mib']} MiB", flush=True)
    names = ("train.inter", "valid.inter", "test.inter", "item.json")
    result["identical_at_old_events"] = all(
        (work / f"old_{old_events}" / f).read_bytes() == (work / f"new_{old_events}" / f).read_bytes() for f in names)
    old, new = result["runs"][f"old@{old_events}"], result["runs"][f"new@{old_events}"]
    result[f"old_over_new_seconds_at_{old_events}"] = round(old["seconds"] / new["seconds"], 2)
    result[f"old_over_new_rss_at_{old_events}"] = round(old["peak_rss_mib"] / new["peak_rss_mib"], 2)
    import pandas
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} threads, Python {platform.python_version()}, "
                         f"pandas {pandas.__version__}")
    if not keep:
        shutil.rmtree(work)
    out = ROOT / output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    fire.Fire(main)
