"""Keep-best and the RL prompt rows, without a model: fake rankings drive :class:`RankingEval`."""

from types import SimpleNamespace

import pytest
import torch

from minirec.errors import MinirecError
from minirec.rl import RLConfig
from minirec.rl.callbacks import BEST, STATE, RankingEval, keep_threshold, paired_gain, rows_fingerprint
from minirec.rl.train import evenly_spaced, planned_evaluations, select_prompt_rows

ROWS = 100


class Catalogue:
    def sid(self, item):
        return item


def fake_eval(tmp_path, hits_by_step, margin=2.0, evaluations=1, rows=ROWS, keep_best=True):
    """A RankingEval whose policy at step s ranks the target first on ``hits_by_step[s]`` rows."""
    rows = [SimpleNamespace(history=(str(i),), target=f"t{i}") for i in range(rows)]
    model = torch.nn.Linear(2, 2)
    step = {"now": 0}

    def rank_fn(policy, histories):
        hits = hits_by_step[step["now"]]
        return [[(f"t{h[0]}" if int(h[0]) < hits else "x", 0.0)] for h in histories]

    ev = RankingEval(rank_fn, rows, Catalogue(), eval_steps=1, keep_best=keep_best, output_dir=tmp_path,
                     margin=margin, evaluations=evaluations)
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


def test_the_threshold_grows_with_the_planned_evaluations(tmp_path):
    """Bonferroni: 6 more hits of 100 is z = 2.51, above 2 for one evaluation, below z_10 = 2.84."""
    assert keep_threshold(2.0, 1) == 2.0 and keep_threshold(0.0, 10) == 0.0
    assert keep_threshold(2.0, 3) == pytest.approx(2.428, abs=1e-3)
    assert keep_threshold(2.0, 10) == pytest.approx(2.837, abs=1e-3)
    for evaluations, kept in ((1, 1), (10, 0)):
        ev, _, at = fake_eval(tmp_path / str(evaluations), {0: 10, 1: 16}, evaluations=evaluations)
        at(0)
        at(1)
        assert ev.best["step"] == kept, evaluations


def test_planned_evaluations():
    def k(**flags):
        return planned_evaluations(RLConfig(model_path="x", **flags), prompts=36259)

    assert k(max_steps=300, eval_steps=100) == 3 and k(max_steps=250, eval_steps=100) == 3
    assert k(max_steps=300, eval_steps=0) == 1
    assert k(num_epochs=1, eval_steps=100) == 46  # 4,532 steps of 8 prompts
    assert k(num_epochs=2, eval_steps=50, prompts_per_step=64) == 23  # 1,132 steps


def test_eval_rows_reach_the_end_of_the_split():
    rows = list(range(4532))
    picked = evenly_spaced(rows, 1000)
    assert len(set(picked)) == 1000 and picked[0] == 0 and picked[-1] > 4532 - 4532 / 1000 - 1
    assert max(rows[:: len(rows) // 1000][:1000]) < 4000  # the floored stride never got there
    assert evenly_spaced(rows, 0) == rows and evenly_spaced(rows[:5], 8) == rows[:5]


def test_resume_refuses_other_eval_rows(tmp_path):
    ev, _, at = fake_eval(tmp_path / "a", {0: 10})
    at(0)
    ckpt = tmp_path / "a" / "checkpoint-1"
    ev.save_state(ckpt)
    fewer, _, _ = fake_eval(tmp_path / "b", {0: 10}, rows=ROWS - 1)
    with pytest.raises(MinirecError, match="evaluated on 100 valid rows"):
        fewer.load_state(ckpt)
    same_count, _, _ = fake_eval(tmp_path / "c", {0: 10})
    same_count.rows = same_count.rows[1:] + same_count.rows[:1]  # the same number of other rows
    same_count.fingerprint = rows_fingerprint(same_count.rows)
    with pytest.raises(MinirecError, match="hash"):
        same_count.load_state(ckpt)


def test_resume_without_the_start_evaluation_is_refused_under_keep_best(tmp_path):
    ev, _, at = fake_eval(tmp_path / "a", {0: 10})
    at(0)
    ckpt = tmp_path / "a" / "checkpoint-1"
    ev.save_state(ckpt)
    (ckpt / STATE).unlink()
    fresh, _, _ = fake_eval(tmp_path / "b", {0: 10})
    with pytest.raises(MinirecError, match=STATE):
        fresh.load_state(ckpt)
    unchecked, _, _ = fake_eval(tmp_path / "c", {0: 10}, keep_best=False)
    unchecked.load_state(ckpt)  # nothing to compare against: resumes
