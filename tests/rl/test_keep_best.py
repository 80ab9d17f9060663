"""Keep-best and the RL prompt rows, without a model: fake rankings drive :class:`RankingEval`."""

from types import SimpleNamespace

import pytest
import torch

from minirec.rl.callbacks import BEST, RankingEval, paired_gain
from minirec.rl.train import select_prompt_rows

ROWS = 100


class Catalogue:
    def sid(self, item):
        return item


def fake_eval(tmp_path, hits_by_step, margin=2.0):
    """A RankingEval whose policy at step s ranks the target first on ``hits_by_step[s]`` rows."""
    rows = [SimpleNamespace(history=(str(i),), target=f"t{i}") for i in range(ROWS)]
    model = torch.nn.Linear(2, 2)
    step = {"now": 0}

    def rank_fn(policy, histories):
        hits = hits_by_step[step["now"]]
        return [[(f"t{h[0]}" if int(h[0]) < hits else "x", 0.0)] for h in histories]

    ev = RankingEval(rank_fn, rows, Catalogue(), eval_steps=1, output_dir=tmp_path, margin=margin)
    ev.trainer = SimpleNamespace(model=model, is_world_process_zero=lambda: True)
    ev._log = lambda logs: None

    def at(s):
        step["now"] = s
        with torch.no_grad():
            model.weight.fill_(float(s))  # the weights say which step they are
        ev.evaluate(SimpleNamespace(global_step=s))

    return ev, model, at


def test_a_gain_within_noise_does_not_replace_the_start(tmp_path):
    # start: 10 hits of 100; step 1: 11 (one more row, within a standard error); step 2: 30
    ev, model, at = fake_eval(tmp_path, {0: 10, 1: 11, 2: 30})
    at(0)
    at(1)
    assert ev.best["step"] == 0  # without the margin, step 1 (higher score) would be kept
    at(2)
    assert ev.best["step"] == 2
    assert ev.restore_best() == 2 and float(model.weight[0, 0]) == 2.0
    assert not (tmp_path / BEST).exists()  # the kept weights go into the run, not beside it


def test_nothing_better_than_noise_ships_the_start(tmp_path):
    ev, model, at = fake_eval(tmp_path, {0: 10, 1: 11, 2: 9})
    for s in range(3):
        at(s)
    assert ev.restore_best() == 0 and float(model.weight[0, 0]) == 0.0  # the start's weights, from disk


def test_margin_zero_keeps_any_higher_score(tmp_path):
    ev, _, at = fake_eval(tmp_path, {0: 10, 1: 11}, margin=0.0)
    at(0)
    at(1)
    assert ev.best["step"] == 1


def test_checkpoint_carries_the_best_policy_and_evaluations(tmp_path):
    """What a resumed run must not forget: a best found before the crash, its history, the start."""
    ev, _, at = fake_eval(tmp_path / "a", {0: 10, 1: 30, 2: 12})
    at(0)
    at(1)
    ckpt = tmp_path / "a" / "checkpoint-1"
    ev.on_step_end(SimpleNamespace(output_dir=str(tmp_path / "a")), SimpleNamespace(global_step=1),
                   SimpleNamespace(should_save=True))

    resumed, model, at2 = fake_eval(tmp_path / "b", {0: 10, 1: 30, 2: 12})
    resumed.load_state(ckpt)
    assert resumed.history == ev.history and resumed.best == ev.best and resumed.start == ev.start
    at2(2)  # worse than step 1: step 1, found before the "crash", stays the kept policy
    assert resumed.restore_best() == 1 and float(model.weight[0, 0]) == 1.0


def test_paired_gain():
    mean, se = paired_gain([1, 0, 1, 1], [0, 0, 1, 1])
    assert mean == pytest.approx(0.25) and se == pytest.approx(0.25)


def test_prompt_rows_come_from_the_whole_split():
    rows = list(range(1000))
    picked = select_prompt_rows(rows, 100, "random", seed=1)
    assert len(set(picked)) == 100 and max(picked) > 500  # not the oldest rows (the old behaviour)
    assert picked == sorted(picked) and picked == select_prompt_rows(rows, 100, "random", seed=1)
    assert picked != select_prompt_rows(rows, 100, "random", seed=2)
    assert select_prompt_rows(rows, 100, "recent", seed=1) == rows[-100:]
    assert select_prompt_rows(rows, 0, "random", seed=1) == rows
