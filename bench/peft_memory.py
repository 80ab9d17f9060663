"""Peak memory and step time of full fine-tuning vs LoRA vs QLoRA vs freeze, one pretrained model.

    OMP_NUM_THREADS=2 python bench/peft_memory.py --steps 10 --warmup 2 --batch_size 8 --seq_len 128
    OMP_NUM_THREADS=1 python bench/peft_memory.py --modes before_after --breakdown True

Every mode trains the same base (default ``--base_model smollm2-135m``, SmolLM2-135M from
requirements-models.txt) on the same batches: real next-SID rows of ``--data_dir`` (prompt
and completion token ids, loss on the completions as in SFT), packed end to end into exactly
``--batch_size`` x ``--seq_len`` tokens per step, so no mode sees padding. The model is set
up by minirec's own code, as ``sft.py`` does it: ``prepare_base`` -> ``load_base`` (4-bit NF4
for QLoRA) -> ``add_sid_tokens`` -> ``wrap_model(mode)`` (LoRA on every Linear layer, the SID
rows as PEFT trainable tokens); the optimizer is AdamW over the trainable parameters, like
the Trainer's default. What is left out is the Trainer's own bookkeeping (evaluation,
checkpoints, logging), which would blur the step times.

Each mode runs in its own fresh subprocess, so each peak is that mode's own: the worker reads
its ``VmHWM`` (= ``ru_maxrss`` of that process) twice, once after the model is set up and,
after resetting the high-water mark (``/proc/self/clear_refs``), once more after training, so
``peak RSS (train)`` is the peak *during the training steps* (weights + activations + grads +
optimizer state) without the transient of loading or quantizing the checkpoint. A converted
SmolLM2 is made before any mode runs, so no mode pays the GGUF conversion. Reported per mode:
trainable / total parameters, RSS after setup, peak RSS over the whole process and over the
training steps, median (and min/max) seconds per step over ``--steps`` steps after
``--warmup`` untimed ones (the first step allocates the AdamW state), tokens/s. (RSS after
setup is read after handing freed heap pages back to the OS, so it is what the model holds.) On CUDA it
also gives ``torch.cuda.max_memory_allocated`` over the steps. Writes
``bench/results/peft_memory.json`` and prints a markdown table.

``--modes`` takes runs, not only modes: ``lora+peft`` is LoRA with PEFT's own layer forwards
(minirec's lean ones, ``minirec/modeling/lean.py``, switched off: the "before"), ``lora+d0`` LoRA
with ``--lora_dropout 0``, ``lora+mmap`` LoRA under glibc with a fixed 1 MiB mmap threshold
(``MALLOC_MMAP_THRESHOLD_``), combinable (``qlora+peft+d0``); ``--modes before_after`` runs
full, freeze, LoRA, QLoRA before and after, LoRA without dropout, and the ``+mmap`` runs.
``--breakdown True`` adds what each peak is made of (``bench/memory_breakdown.py``: what autograd
keeps for backward, by source line; at the peak, file-backed pages, memory in use through malloc,
and the rest, mostly freed memory glibc keeps) and a second table.

What a CPU does differently from a GPU here, and so what not to expect from the CPU numbers:

* There is no separate device memory: weights, activations, gradients and the optimizer
  state all sit in the process RSS, next to the Python/torch runtime (a few hundred MB that
  every mode pays). So the RSS ratios between modes are smaller than the device-memory
  ratios on a GPU.
* Compute is fp32 (minirec uses bf16 only on CUDA with bf16 support): 4 bytes per weight,
  gradient and activation; AdamW adds 8 bytes per trainable weight. Full fine-tuning of a
  135M model is ~2.2 GB before activations; LoRA keeps only the frozen fp32 weights.
* bitsandbytes' 4-bit on CPU dequantizes the NF4 weights on the fly in CPU kernels in every
  forward and backward, with no fused GPU kernel to hide it, so QLoRA buys no speed: expect
  it level with LoRA at best, slower as the layers grow. Its memory win is only the frozen
  Linear weights (4-bit instead of 32-bit); the embedding / LM head stay fp32 (28.3M of
  SmolLM2's 135M parameters), and activations are the same as LoRA's.
* The SID rows train as PEFT trainable tokens (every mode but full). With PEFT's forwards
  (``+peft``) each forward builds a full copy of the 49,712 x 576 embedding (Industrial) with
  the SID rows swapped in (for the input embedding and again for the tied LM head) and its
  backward a dense gradient of it, ~115 MB each on SmolLM2; minirec's lean forwards touch only
  the SID rows.
* LoRA keeps the frozen fp32 weights, memory-mapped from the safetensors file (file-backed
  RSS, ~0.4 GB here); QLoRA keeps them in 4-bit, and ``load_base`` copies its unquantized
  weights out of the map so the map is released.
* glibc's malloc raises its mmap threshold to the size of the largest block freed (up to 32
  MiB), so after the first step activation-sized tensors come from its heap, and the freed
  holes it keeps between live tensors count in RSS: 0.3-1.4 GB at these peaks (``+mmap`` runs
  show the peaks without most of it, at a cost in page faults).
* Activations scale with batch x seq_len and, for a 49k-token vocabulary, the fp32 logits
  and their softmax (batch x seq_len x vocab x 4 bytes, twice) are a large share at small
  model sizes: every mode pays them, which also narrows the ratios.
* Step time is compute-bound on 1-2 cores for every mode: LoRA saves the weight gradients
  and the optimizer update of the frozen weights, not the backward through the activations,
  so its speed-up over full fine-tuning is small on a CPU.

For comparison, LoRA guides quote on GPUs, for billion-parameter models where weights and
optimizer state dominate: LoRA ~30-40 % of full fine-tuning memory and 1.5-2x faster steps,
QLoRA ~10-20 % of full fine-tuning memory (and somewhat slower than LoRA). Expect the CPU
ratios for a 135M model to sit closer to 1 on both counts.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, no install needed
from memory_breakdown import Breakdown  # noqa: E402  (bench/, this script's directory)

MODES = ("full", "lora", "qlora", "freeze")
# Before (+peft: PEFT's own forwards) and after (minirec's lean ones), and LoRA without dropout.
BEFORE_AFTER = ("full,freeze+peft,freeze,lora+peft,lora,lora+peft+d0,lora+d0,qlora+peft,qlora,"
                "full+mmap,lora+mmap,qlora+mmap")
RESULT_TAG = "PEFT_MEMORY_RESULT "


def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _trim() -> None:
    """Give freed heap pages back to the OS (glibc), so RSS after setup is what is still held."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _packed_batches(tokenizer, data_dir, batch_size, seq_len, n_batches):
    """Real next-SID rows, packed end to end into [batch_size, seq_len] tensors (no padding)."""
    import torch

    from minirec.data import load_dataset
    from minirec.prompts import build_examples
    from minirec.tokenization import encode_examples

    data = load_dataset(data_dir, splits=("train",))
    need = batch_size * seq_len * n_batches
    rows = data.split("train")[: max(64, need // 30)]  # a next-SID row is ~40 tokens with SmolLM2
    enc = encode_examples(tokenizer, build_examples(rows, data.catalogue, ("next_sid",)), cutoff_len=512)
    ids = [t for row in enc["input_ids"] for t in row]
    labels = [t for row in enc["labels"] for t in row]
    while len(ids) < need:
        ids, labels = ids + ids, labels + labels
    ids = torch.tensor(ids[:need]).view(n_batches, batch_size, seq_len)
    labels = torch.tensor(labels[:need]).view(n_batches, batch_size, seq_len)
    # A short window can hold prompt tokens only; give it one target so no loss is 0/0 (same compute).
    empty = (labels == -100).all(-1)
    labels[..., -1] = torch.where(empty, ids[..., -1], labels[..., -1])
    return ids, labels


def worker(a) -> dict:
    """One mode, in this (fresh) process."""
    import torch

    from minirec.data import load_dataset
    from minirec.modeling.adapters import count_parameters, wrap_model
    from minirec.modeling.bases import prepare_base
    from minirec.modeling.loading import add_sid_tokens, keep_4bit_trainable, load_base

    catalogue = load_dataset(a.data_dir, splits=()).catalogue
    with tempfile.TemporaryDirectory() as run_dir:
        base = prepare_base(a.base_model, run_dir, catalogue)
        if a.mode == "prepare":
            return {"base_path": str(base)}
        started = time.perf_counter()
        model, tokenizer = load_base(base, "4bit" if a.mode == "qlora" else None)
    keep_4bit_trainable(model)
    sid_ids = add_sid_tokens(model, tokenizer, catalogue.sid_tokens())
    model = wrap_model(model, a.mode, sid_ids, lora_r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=a.lora_dropout,
                       gradient_checkpointing=a.gradient_checkpointing, lean=a.lean)
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not getattr(model, "is_quantized", False):
        model.to(device)
    model.train()
    trainable, total = count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.learning_rate,
                                  weight_decay=0.0)
    setup_seconds = time.perf_counter() - started
    ids, labels = _packed_batches(tokenizer, a.data_dir, a.batch_size, a.seq_len, a.warmup + a.steps)
    peak_setup = _status_kb("VmHWM")
    _trim()  # e.g. the fp32 weights QLoRA quantized from
    rss_setup = _status_kb("VmRSS")
    reset = _reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    breakdown = Breakdown(model) if a.breakdown else None
    if breakdown:
        breakdown.start()
    times, losses = [], []
    look_at = max(a.warmup - 1, 0)  # --breakdown reads what autograd keeps in this step (untimed if warmup)
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            cpu_start = resource.getrusage(resource.RUSAGE_SELF)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        # Only the loss outlives the forward, as in the Trainer's compute_loss: the logits are
        # freed before backward.
        with breakdown.saved_tensors() if breakdown and step == look_at else contextlib.nullcontext():
            loss = model(input_ids=ids[step].to(device), labels=labels[step].to(device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(round(loss.item(), 4))
        del loss
    peak_train = _status_kb("VmHWM")
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    mb = 1 / 1024
    result = {
        "run": a.run or a.mode,
        "mode": a.mode,
        "lean": a.lean,
        "lora_dropout": a.lora_dropout if a.mode in ("lora", "qlora") else None,
        "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
        "setup_seconds": round(setup_seconds, 1),
        "rss_after_setup_mb": round(rss_setup * mb),
        "peak_rss_process_mb": round(max(peak_setup, peak_train) * mb),
        "peak_rss_train_mb": round(peak_train * mb) if reset else None,
        "step_seconds_median": round(statistics.median(times), 3),
        "step_seconds_min": round(min(times), 3),
        "step_seconds_max": round(max(times), 3),
        "tokens_per_second": round(a.batch_size * a.seq_len / statistics.median(times), 1),
        "losses": losses,
        "torch_threads": torch.get_num_threads(),
        # CPU seconds per timed step, user and system (page faults, mmap): less sensitive than the
        # wall time to other jobs on the machine, though not immune (shared caches, memory bandwidth).
        "cpu_user_seconds_per_step": round((cpu_end.ru_utime - cpu_start.ru_utime) / a.steps, 3),
        "cpu_system_seconds_per_step": round((cpu_end.ru_stime - cpu_start.ru_stime) / a.steps, 3),
    }
    if device.type == "cuda":
        result["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if breakdown:
        result["breakdown"] = breakdown.report()
    return result


def parse_run(spec: str, a) -> tuple[str, bool, float, dict]:
    """``mode[+peft][+d0][+mmap]`` -> (mode, lean, lora_dropout, environment): ``+peft`` runs
    PEFT's own forwards (minirec's lean ones off), ``+d0`` LoRA / QLoRA with --lora_dropout 0,
    ``+mmap`` glibc with a fixed 1 MiB mmap threshold (``MALLOC_MMAP_THRESHOLD_=1048576``)."""
    mode, *options = spec.split("+")
    allowed = {"mmap"} | ({"peft"} if mode != "full" else set()) | ({"d0"} if mode in ("lora", "qlora") else set())
    if mode not in MODES or not set(options) <= allowed or len(set(options)) < len(options):
        sys.exit(f"--modes: {spec!r} is not mode[+peft][+d0][+mmap] (mode from {', '.join(MODES)}; "
                 "+peft for freeze / lora / qlora, +d0 for lora / qlora)")
    env = {"MALLOC_MMAP_THRESHOLD_": "1048576"} if "mmap" in options else {}
    return mode, a.lean and "peft" not in options, 0.0 if "d0" in options else a.lora_dropout, env


def _run_worker(spec, a) -> dict:
    mode, lean, dropout, env = parse_run(spec, a) if spec != "prepare" else (spec, a.lean, a.lora_dropout, {})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--run", spec,
           "--base_model", a.base_model, "--data_dir", a.data_dir, "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--batch_size", str(a.batch_size), "--seq_len", str(a.seq_len), "--lora_r", str(a.lora_r),
           "--learning_rate", str(a.learning_rate), "--gradient_checkpointing", str(a.gradient_checkpointing),
           "--lora_dropout", str(dropout), "--lean", str(lean), "--breakdown", str(a.breakdown)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ | env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{spec} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def _peak(r) -> int:
    return r["peak_rss_train_mb"] if r["peak_rss_train_mb"] is not None else r["peak_rss_process_mb"]


def table(results, base_mode="full") -> str:
    ref = next((r for r in results if r["mode"] == base_mode), None)
    cuda = any("cuda_max_allocated_mb" in r for r in results)
    head = ["run", "trainable params", "RSS after setup (MB)", "peak RSS, train (MB)", "peak RSS, process (MB)"]
    head += ["CUDA peak (MB)"] if cuda else []
    head += ["median step (s)", "tokens/s", "CPU s/step (user / sys)"]
    if ref:
        head += ["peak train RSS vs full", "step time vs full"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.get("run", r["mode"]), f"{r['trainable_params']:,} ({r['trainable_percent']:.2f} %)",
                 f"{r['rss_after_setup_mb']:,}",
                 f"{r['peak_rss_train_mb']:,}" if r["peak_rss_train_mb"] is not None else "n/a",
                 f"{r['peak_rss_process_mb']:,}"]
        cells += [f"{r.get('cuda_max_allocated_mb', 0):,}"] if cuda else []
        cells += [f"{r['step_seconds_median']:.3f}", f"{r['tokens_per_second']:,.0f}",
                  f"{r.get('cpu_user_seconds_per_step', 0):.2f} / {r.get('cpu_system_seconds_per_step', 0):.2f}"]
        if ref:
            cells += [f"{_peak(r) / _peak(ref):.2f}x", f"{r['step_seconds_median'] / ref['step_seconds_median']:.2f}x"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def breakdown_table(results) -> str:
    """The parts of each run's peak (``--breakdown``; memory_breakdown.py says what each is)."""
    head = ["run", "peak RSS (MB)", "at the peak: file-backed", "malloc in use", "other anon (added by the steps)",
            "malloc in-use peak", "saved for backward", "largest savers (MB)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        b = r.get("breakdown")
        if not b:
            continue
        at, start = b.get("at_rss_peak"), b.get("at_start")
        top = ", ".join(f"{k} {v}" for k, v in list(b["saved_by_source"].items())[:4])
        cells = [r.get("run", r["mode"]), f"{_peak(r):,}"]
        if at:
            cells += [f"{at['file_mb']:,}", f"{at['malloc_in_use_mb']:,}",
                      f"{at['other_anon_mb']:,} ({at['other_anon_mb'] - start['other_anon_mb']:+,})"]
        else:
            cells += ["n/a"] * 3
        cells += [f"{b.get('malloc_in_use_peak_mb', 'n/a'):,}", f"{b['saved_for_backward_mb']:,}", top]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _flag(s: str) -> bool:
    return s.lower() in ("1", "true", "yes")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per mode (after --warmup)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (AdamW state, allocator warm-up)")
    p.add_argument("--batch_size", type=int, default=8, help="rows per step (one forward, no accumulation)")
    p.add_argument("--seq_len", type=int, default=128, help="tokens per row (real rows packed end to end)")
    p.add_argument("--modes", default=",".join(MODES),
                   help="comma list of runs, mode[+peft][+d0] (see parse_run), or 'before_after' for "
                        + BEFORE_AFTER)
    p.add_argument("--base_model", default="smollm2-135m", help="smollm2-135m or a local HF checkpoint dir")
    p.add_argument("--data_dir", default=str(ROOT / "data/Industrial_and_Scientific"))
    p.add_argument("--lora_r", type=int, default=8, help="LoRA rank (alpha = 2 r), LoRA and QLoRA")
    p.add_argument("--lora_dropout", type=float, default=0.05, help="LoRA dropout (sft.py's default)")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--gradient_checkpointing", type=_flag, default=False)
    p.add_argument("--lean", type=_flag, default=True,
                   help="minirec's lean LoRA / trainable-token forwards (False: PEFT's own, for comparison)")
    p.add_argument("--breakdown", type=_flag, default=False,
                   help="also report the parts of each peak (bench/memory_breakdown.py)")
    p.add_argument("--out", default=str(ROOT / "bench/results/peft_memory.json"))
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--run", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        a.mode = a.worker
        print(RESULT_TAG + json.dumps(worker(a)), flush=True)
        return
    runs = [m.strip() for m in (BEFORE_AFTER if a.modes == "before_after" else a.modes).split(",") if m.strip()]
    for spec in runs:
        parse_run(spec, a)
    if a.steps < 1 or a.warmup < 0 or a.batch_size < 1 or a.seq_len < 8:
        sys.exit("--steps >= 1, --warmup >= 0, --batch_size >= 1, --seq_len >= 8")

    prepared = _run_worker("prepare", a)  # converts SmolLM2 once, outside every measured process
    results = []
    for spec in runs:
        r = _run_worker(spec, a)
        results.append(r)
        print(f"{spec}: peak RSS train {r['peak_rss_train_mb']} MB, median step {r['step_seconds_median']} s",
              flush=True)
    report = {
        "base_model": a.base_model, "base_path": prepared["base_path"],
        "settings": {"modes": runs} | {k: getattr(a, k) for k in (
            "steps", "warmup", "batch_size", "seq_len", "lora_r", "lora_dropout", "learning_rate",
            "gradient_checkpointing", "lean")},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "results": results,
        "table": table(results),
    }
    if a.breakdown:
        report["breakdown_table"] = breakdown_table(results)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{a.base_model}, batch {a.batch_size} x {a.seq_len} tokens, median of {a.steps} steps "
          f"after {a.warmup} warm-up, one process per mode -> {a.out}\n")
    print(report["table"])
    if a.breakdown:
        print("\n" + report["breakdown_table"])


if __name__ == "__main__":
    main()
