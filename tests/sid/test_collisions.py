"""Collision handling: nearest free last-level code first, explicit extra level when needed."""

import numpy as np
import pytest

from minirec.sid.collisions import collision_summary, level_prefix, resolve_collisions, sid_tokens


def test_closest_item_keeps_the_code_and_the_other_moves_to_the_nearest_free_code():
    codes = np.array([[0, 0], [0, 0], [0, 1]])
    codebook = np.array([[0.0], [1.0], [2.0], [3.0]])
    residual = np.array([[0.4], [0.1], [1.0]])  # item 1 is closer to code 0; code 1 is taken by item 2
    r = resolve_collisions(codes, residual, codebook)
    assert r.codes == [(0, 2), (0, 0), (0, 1)]
    assert r.reassigned == [0] and r.extra_level == []
    assert r.before["colliding_items"] == 2 and r.before["collision_rate"] == pytest.approx(2 / 3)
    assert r.after["colliding_items"] == 0 and r.after["distinct_sids"] == 3


def test_full_prefix_gets_an_extra_level_for_every_member():
    # prefix (0,) has 2 last-level codes, both used; three items share (0, 0)
    codes = np.array([[0, 0], [0, 0], [0, 0], [0, 1], [1, 0]])
    codebook = np.array([[0.0], [1.0]])
    residual = np.zeros((5, 1))
    r = resolve_collisions(codes, residual, codebook)
    assert r.reassigned == [] and r.extra_level == [0, 1, 2]
    assert r.codes[:3] == [(0, 0, 0), (0, 0, 1), (0, 0, 2)] and r.codes[3:] == [(0, 1), (1, 0)]
    assert r.after["colliding_items"] == 0


def test_partly_free_prefix_moves_what_it_can_then_extends_the_rest():
    codes = np.array([[0, 0], [0, 0], [0, 0]])
    codebook = np.array([[0.0], [5.0]])
    residual = np.array([[0.0], [1.0], [2.0]])
    r = resolve_collisions(codes, residual, codebook)
    # item 0 keeps code 0; item 1 (next closest) takes the last free code; item 2 finds none
    assert r.codes == [(0, 0, 0), (0, 1), (0, 0, 1)]
    assert r.reassigned == [1] and r.extra_level == [0, 2]


def test_without_reassignment_every_collision_goes_to_the_extra_level():
    codes = np.array([[1, 2], [1, 2], [3, 4]])
    r = resolve_collisions(codes, reassign=False)
    assert r.codes == [(1, 2, 0), (1, 2, 1), (3, 4)] and r.extra_level == [0, 1]


def test_random_codes_always_end_unique_and_prefix_free():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(60, 3))  # 27 possible tuples for 60 items: many full prefixes
    r = resolve_collisions(codes, rng.normal(size=(60, 2)), rng.normal(size=(3, 2)))
    sids = ["".join(sid_tokens(c)) for c in r.codes]
    assert len(set(sids)) == 60
    assert not any(a != b and b.startswith(a) for a in sids for b in sids)
    assert r.before["colliding_items"] > 0 and r.reassigned and r.extra_level


def test_sid_tokens_and_summary():
    assert sid_tokens((12, 200, 7)) == ["<a_12>", "<b_200>", "<c_7>"]
    assert level_prefix(3) == "d"
    assert collision_summary([(1,), (1,), (2,)])["collision_groups"] == 1
