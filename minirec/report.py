"""One results table for a pipeline: each stage's evaluation beside the baselines.

    python -m minirec.report --runs out/sft_full,out/rl_on_sft --baselines out/baselines --out out/report.md

Reads ``<run>/eval_<split>/metrics.json`` (written by ``evaluate.py``) for every run and
``<baselines>/<name>/metrics.json`` (``python -m minirec.baselines``) where present, prints one
table (HR@K, NDCG@K, MRR), and writes a markdown report with PNG plots beside it: HR/NDCG@K by
system, and each run's own training curves (its ``training.png``). Beside each system the table
says what it trained (epochs, steps, the kept checkpoint, from the run's own records) and on how
many rows it was scored, so reduced runs (``pipeline.sh QUICK=1``) say what they are. A leaf
command: nothing imports it.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from minirec.config import Config
from minirec.errors import MinirecError
from minirec.io import read_text, write_text
from minirec.plots import plot_metrics_by_k

KS = (1, 5, 10, 50)
BASELINES = ("popularity", "recent_popular", "sasrec")


@dataclass
class ReportConfig(Config):
    runs: str = ""
    """Comma-separated run dirs (SFT, then RL, ...), each evaluated with evaluate.py on --split (its
    <run>/eval_<split>), or evaluation dirs (evaluate.py --output_dir: they hold metrics.json)."""
    names: str = ""
    """Comma-separated display names for --runs (default: the dir names). Each row's name then says
    what its evaluation recorded: a re-purchase prior, CF-guided decoding and its weight."""
    stages: str = ""
    """Optional tab-separated file of "stage<TAB>seconds" lines (scripts/pipeline.sh writes one): a
    table of the wall time of each stage and their total."""
    baselines: str = ""
    """Dir holding <name>/metrics.json of python -m minirec.baselines runs (optional)."""
    split: str = "test"
    """Which evaluation to report."""
    out: str = "out/report.md"
    """The markdown report; its PNG plots go beside it."""

    def validate(self) -> None:
        if self.split not in ("valid", "test"):
            raise MinirecError(f"--split {self.split!r}: choose valid or test")

    def output(self):
        return "--out", self.out


def _read(path: Path) -> dict:
    try:
        return json.loads(read_text(path))
    except (OSError, json.JSONDecodeError) as e:
        raise MinirecError(f"{path}: cannot read metrics ({e.__class__.__name__}); run the evaluation first")


def _items(value: str) -> list[str]:
    """A comma list -> its non-empty entries."""
    return [p.strip() for p in value.split(",") if p.strip()]


def evaluation_of(entry: Path, split: str) -> tuple[dict, Path]:
    """(metrics, run dir) of a --runs entry: an evaluation dir, or a run dir evaluated on ``split``."""
    own = entry / "metrics.json"
    if own.is_file() and not (entry / "run.json").is_file():  # an evaluation dir, not a run
        m = _read(own)
        if m.get("split") != split:
            raise MinirecError(f"{own}: an evaluation of {m.get('split')!r}, not of --split {split}")
        return m, Path(m.get("model_path", entry))
    return _read(entry / f"eval_{split}" / "metrics.json"), entry


def decoding_label(m: dict) -> str:
    """What an evaluation added to the plain beam, in words, from its metrics.json."""
    parts = []
    if m.get("cf_weight"):  # the teacher's dir is in metrics.json; seeds of one setting share a label
        parts.append(f"CF-guided decoding (W {m['cf_weight']:g})")
    if m.get("repeat_prior"):
        parts.append(f"re-purchase prior {m['repeat_prior']:g}")
    if m.get("repeat_bonus"):
        parts.append(f"repeat bonus {m['repeat_bonus']:g} x {m.get('repeat_decay', 1):g}^age")
    return f" + {' + '.join(parts)}" if parts else ""


class Row(NamedTuple):
    name: str
    metrics: dict  # of the evaluation on the split
    run: Path | None  # the run dir; None for a baseline
    trained: str  # what the system trained, in words


def trained_run(run: Path) -> str:
    """What a run dir trained, from its run.json and metrics.json."""
    from minirec.run_info import RunInfo

    m = json.loads(read_text(run / "metrics.json")) if (run / "metrics.json").is_file() else {}
    if RunInfo.read(run).stage == "rl":
        return f"+{m['steps']} GRPO steps, kept step {m['kept_step']}" if "steps" in m else "GRPO"
    epochs, best = m.get("train", {}).get("epoch"), str(m.get("best_checkpoint") or "")
    kept = next((e["epoch"] for e in m.get("eval_by_epoch", []) if best.endswith(f"-{e['step']}")), None)
    if epochs is None:
        return "SFT"
    return f"SFT {epochs:g} epoch{'s' * (epochs != 1)}" + (f", kept epoch {kept:g}" if kept is not None else "")


def trained_baseline(name: str, m: dict) -> str:
    train = m.get("train", {})
    if "epochs_run" in train:
        return f"{train['epochs_run']} epoch{'s' * (train['epochs_run'] != 1)}, kept epoch {train['best_epoch']}"
    return "counts on train"


def collect(config: ReportConfig) -> list[Row]:
    """Every run, then every baseline found."""
    runs = [Path(r) for r in _items(config.runs)]
    names = _items(config.names) or [r.name for r in runs]
    if len(names) != len(runs):
        raise MinirecError(f"--names has {len(names)} entries for {len(runs)} --runs")
    rows = []
    for name, entry in zip(names, runs):
        m, run = evaluation_of(entry, config.split)
        rows.append(Row(name + decoding_label(m), m, run, trained_run(run)))
    if config.baselines:
        for b in BASELINES:
            path = Path(config.baselines) / b / "metrics.json"
            if path.is_file():
                m = _read(path)
                if config.split in m:
                    rows.append(Row(b, m[config.split], None, trained_baseline(b, m)))
    if not rows:
        raise MinirecError("nothing to report: pass --runs and/or --baselines")
    return rows


def table(rows: list[Row], ks=KS) -> str:
    cols = [f"{m}@{k}" for k in ks for m in ("HR", "NDCG")] + ["MRR"]
    lines = ["| system | trained | rows | " + " | ".join(cols) + " |", "|---|---|---:|" + "---:|" * len(cols)]
    for name, m, _, trained in rows:
        lines.append(f"| {name} | {trained} | {m.get('rows', '–')} | "
                     + " | ".join(f"{m[c]:.4f}" if c in m else "–" for c in cols) + " |")
    return "\n".join(lines)


def stage_table(path: Path) -> list[str]:
    """The markdown lines of a "stage<TAB>seconds" file, with the total."""
    try:
        stages = [(name, float(sec)) for name, sec in (line.split("\t") for line in read_text(path).splitlines()
                                                      if line.strip())]
    except (OSError, ValueError) as e:
        raise MinirecError(f"--stages {path}: expected stage<TAB>seconds lines ({e.__class__.__name__})")
    lines = ["## Wall time by stage", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {sec:.0f} |" for name, sec in stages]
    return lines + [f"| **total** | **{sum(s for _, s in stages):.0f}** |", ""]


def report(**flags) -> None:
    """:func:`main` for Python callers: keyword arguments are the flags of :class:`ReportConfig`."""
    main(ReportConfig.checked(**flags))


def main(config: ReportConfig) -> None:
    """One results table (runs beside baselines): printed, and written as markdown with PNG plots."""
    rows = collect(config)
    print(table(rows))
    out = Path(config.out)
    plot_metrics_by_k([(r.name, r.metrics) for r in rows], KS, out.with_name("metrics_by_k.png"))
    parts = [f"# minirec report ({config.split} split)", "", table(rows), "", "![HR/NDCG@K](metrics_by_k.png)", ""]
    for name, m, run, _ in rows:
        if run is not None and (run / "training.png").is_file():
            png = out.with_name("training_" + "".join(c if c.isalnum() else "_" for c in name) + ".png")
            shutil.copyfile(run / "training.png", png)
            parts += [f"## {name}", "", f"`{run}`: {m['rows']} rows, beam {m['num_beams']}, "
                      f"{m['wall_seconds']:.0f} s to decode", "", f"![{name} training]({png.name})", ""]
    if config.stages:
        parts += stage_table(Path(config.stages))
    write_text(out, "\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    from minirec.cli import Command, run

    run(Command("-m minirec.report", ReportConfig, main))
