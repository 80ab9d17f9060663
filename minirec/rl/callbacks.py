"""What tells a user whether RL works, and keeps the policy that worked best.

:class:`RankingEval` decodes a fixed set of valid rows with the current policy at the start,
every ``eval_steps`` and at the end, and logs HR@10 / NDCG@10 / MRR beside TRL's reward, KL and
zero-std fraction and the rollout's dynamic-sampling fractions. The rows are split across
processes and the ranks gathered, so N processes evaluate N times faster, not N times.

Keep-best: a later policy replaces the start only when its paired gain in HR@10 + NDCG@10 over
the start, row by row on the same valid rows, exceeds ``threshold`` standard errors of that gain
(:func:`keep_threshold`: the one-sided ``margin`` z, Bonferroni-corrected for the planned number
of evaluations, since the best of k noisy tests passes by luck about k times as often); among
the policies that pass, the best score wins. So a kept policy is better than its start beyond
noise, and a run whose steps all fall within noise ships its start. The kept weights live on
disk (``best_policy.safetensors`` in the output dir, rewritten atomically by the main process
at the start and at every improvement, no copy in host memory), and every checkpoint carries
them with this callback's state and the rollout's generator, so ``--resume_from_checkpoint``
keeps a best found before a crash.
"""

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from statistics import NormalDist

import torch
from transformers import TrainerCallback

from minirec.distributed import rank, world_size
from minirec.errors import MinirecError
from minirec.io import write_json
from minirec.metrics import rank_of, ranking_metrics

BEST = "best_policy.safetensors"
STATE = "minirec_rl_state.json"


def row_scores(ranks) -> list[float]:
    """Per-row HR@10 + NDCG@10: the quantity keep-best compares, row by row."""
    return [(1.0 + 1 / math.log2(r + 2)) if r is not None and r < 10 else 0.0 for r in ranks]


def paired_gain(scores, start) -> tuple[float, float]:
    """Mean and standard error of the row-by-row difference ``scores - start``."""
    diffs = [a - b for a, b in zip(scores, start, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    return mean, math.sqrt(var / n)


def keep_threshold(margin: float, evaluations: int) -> float:
    """The z a gain must exceed over ``evaluations`` tests, for the one-sided level of ``margin``
    in one test (Bonferroni). 0 stays 0: no noise test, any higher score is kept."""
    if margin <= 0 or evaluations <= 1:
        return margin
    normal = NormalDist()
    return normal.inv_cdf(1 - (1 - normal.cdf(margin)) / evaluations)


def rows_fingerprint(rows) -> str:
    """A hash of the evaluation rows (histories and targets): a resume must compare the same rows."""
    text = json.dumps([[list(r.history), r.target] for r in rows], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RankingEval(TrainerCallback):
    def __init__(self, rank_fn, rows, catalogue, eval_steps, keep_best=True, rollout=None, output_dir=".",
                 margin=2.0, evaluations=1):
        """``rank_fn(model, histories)`` -> ranked (sid, score) lists for ``rows``; ``evaluations``:
        how many evaluations after the start the run plans, for keep-best's threshold."""
        self.rank_fn, self.rows, self.catalogue = rank_fn, rows, catalogue
        self.eval_steps, self.keep_best, self.rollout, self.margin = eval_steps, keep_best, rollout, margin
        self.threshold = keep_threshold(margin, evaluations)
        self.fingerprint = rows_fingerprint(rows)
        self.out = Path(output_dir)
        self.trainer = None  # set once the trainer exists
        self.history, self.start, self.best = [], None, None  # best: {"step", "score"}

    def _ranks(self, model):
        """Each process decodes every world_size-th row; all processes get every row's rank."""
        from accelerate.utils import gather_object

        mine = list(range(rank(), len(self.rows), world_size()))
        ranked = self.rank_fn(model, [self.rows[i].history for i in mine]) if mine else []
        pairs = [(i, rank_of([s for s, _ in preds], self.catalogue.sid(self.rows[i].target)))
                 for i, preds in zip(mine, ranked)]
        if world_size() > 1:
            pairs = gather_object(pairs)
        by_row = dict(pairs)
        return [by_row[i] for i in range(len(self.rows))]

    def evaluate(self, state):
        if self.history and self.history[-1]["step"] == state.global_step:  # already evaluated here
            return
        model = self.trainer.model
        ranks = self._ranks(model)
        m = ranking_metrics(ranks, ks=(10,))
        scores = row_scores(ranks)
        logs = {"valid_HR@10": m["HR@10"], "valid_NDCG@10": m["NDCG@10"], "valid_MRR": m["MRR"]}
        if self.start is None:
            self.start = scores
        gain, se = paired_gain(scores, self.start)
        logs.update({"valid_gain_vs_start": round(gain, 6), "valid_gain_se": round(se, 6)})
        self.history.append({"step": state.global_step, **logs})
        self._log(logs)
        score = sum(scores) / len(scores)
        passes = state.global_step == self.history[0]["step"] or gain > self.threshold * se
        if self.keep_best and passes and (self.best is None or score > self.best["score"]):
            self.best = {"step": state.global_step, "score": score}
            if self.trainer.is_world_process_zero():
                self._write_best(model)

    def _log(self, logs):
        """Log the evaluation as its own line without disturbing the step's own log: the base
        Trainer.log (TRL's override would move the step's reward/KL metrics into this line), and
        ``should_log`` put back (logging resets it, which silently dropped the step's loss line)."""
        from transformers import Trainer

        should_log = self.trainer.control.should_log
        Trainer.log(self.trainer, logs)
        self.trainer.control.should_log = should_log

    def _write_best(self, model):
        from safetensors.torch import save_file

        tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        tmp = self.out / (BEST + ".tmp")
        self.out.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp))
        os.replace(tmp, self.out / BEST)

    def on_train_begin(self, args, state, control, **kw):
        if not self.history:  # the starting point, so every curve has its baseline (a resumed run has it)
            self.evaluate(state)

    def on_step_end(self, args, state, control, **kw):
        if self.eval_steps and state.global_step % self.eval_steps == 0:
            self.evaluate(state)
        if control.should_save:  # before the Trainer writes the checkpoint, whose trainer_state.json comes last
            self.save_state(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def on_log(self, args, state, control, logs=None, **kw):
        # Every process logs the same training steps; other lines (the evaluation's, the final
        # summary) take no counters.
        if logs is None or self.rollout is None or "loss" not in logs:
            return
        fracs = self.rollout.pop_stats(self._sum_over_processes)
        logs.update(fracs)
        if state.log_history:  # the Trainer stored a copy of logs before calling us
            state.log_history[-1].update(fracs)

    def _sum_over_processes(self, counts):
        if world_size() == 1:
            return counts
        accelerator = self.trainer.accelerator
        total = accelerator.reduce(torch.tensor(counts, dtype=torch.long, device=accelerator.device), "sum")
        return total.tolist()

    def on_train_end(self, args, state, control, **kw):
        self.evaluate(state)

    # --- resume: what a checkpoint must carry besides TRL's own state --------------------------

    def save_state(self, ckpt: Path) -> None:
        """Write what resume needs into the checkpoint dir. Called before the Trainer's own files:
        a checkpoint whose trainer_state.json exists (complete to a resume) then holds these too."""
        ckpt.mkdir(parents=True, exist_ok=True)
        if self.rollout is not None:
            rng = self.rollout.rng.get_state().tolist()
            write_json(ckpt / f"minirec_rollout_rank{rank()}.json", {"rng": rng})
        if self.trainer.is_world_process_zero():
            if self.best and (self.out / BEST).exists():
                shutil.copyfile(self.out / BEST, ckpt / BEST)
            write_json(ckpt / STATE, {"history": self.history, "start": self.start, "best": self.best,
                                      "rows": len(self.rows), "rows_sha256": self.fingerprint})

    def load_state(self, checkpoint) -> None:
        """Take up the evaluations, best policy and rollout generator saved with ``checkpoint``."""
        ckpt = Path(checkpoint)
        rollout_file = ckpt / f"minirec_rollout_rank{rank()}.json"
        if self.rollout is not None and rollout_file.exists():
            state = json.loads(rollout_file.read_text())["rng"]
            self.rollout.rng.set_state(torch.tensor(state, dtype=torch.uint8))
        if not (ckpt / STATE).exists():
            if self.keep_best:  # else the start would be re-measured on the resumed weights
                raise MinirecError(f"{ckpt} has no {STATE} (the start's evaluation): keep-best cannot resume from "
                                   "it; resume with --keep_best False or start the run again")
            return
        saved = json.loads((ckpt / STATE).read_text())
        if (saved.get("rows"), saved.get("rows_sha256")) != (len(self.rows), self.fingerprint):
            raise MinirecError(f"{ckpt} was evaluated on {saved.get('rows', '?')} valid rows (hash "
                               f"{saved.get('rows_sha256', 'not recorded')}), this run on {len(self.rows)} (hash "
                               f"{self.fingerprint}): resume with the checkpoint's --eval_rows and dataset")
        self.history, self.start, self.best = saved["history"], saved["start"], saved["best"]
        if self.best and (ckpt / BEST).exists() and self.trainer.is_world_process_zero():
            self.out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt / BEST, self.out / BEST)

    def restore_best(self) -> int | None:
        """Put the kept weights back into the model; returns their step (None: nothing kept)."""
        if not self.keep_best or self.best is None:
            return None
        from safetensors.torch import load_file

        params = dict(self.trainer.model.named_parameters())
        for name, value in load_file(str(self.out / BEST)).items():
            params[name].data.copy_(value.to(params[name].device))
        (self.out / BEST).unlink()  # the kept weights are saved with the run itself
        return self.best["step"]
