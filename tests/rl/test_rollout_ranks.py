"""GRPO groups across processes: each rank rolls out whole groups of G, and what a group gets
(completions, beam ranks, target-in-group) does not depend on how many processes share the batch.
Simulated ranks (the rollout reads only ``accelerator.process_index``); the real 2-rank run is
tests/rl/test_grpo_deepspeed.py."""

from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from minirec.decoding import build_trie
from minirec.rl.rollout import SIDRollout

G = 4


@pytest.fixture
def no_unwrap(monkeypatch):
    import trl.models.utils

    @contextmanager
    def unwrap(model, accelerator, *a, **k):
        yield model

    monkeypatch.setattr(trl.models.utils, "unwrap_model_for_generation", unwrap)


def _trainer(model, process_index, targets):
    return SimpleNamespace(accelerator=SimpleNamespace(process_index=process_index), model_wrapped=model,
                           rollout_targets=targets)


@pytest.mark.parametrize("world", [2, 4])
def test_groups_are_the_same_for_any_process_count(tiny_model, catalogue, no_unwrap, world):
    model, tok, _ = tiny_model
    items = ["117", "118", "2", "40"]
    prompts = [p for i in items for p in ["Items: " + catalogue.sid(i) + "\nNext:"] * G]
    targets = [t for i in ("5", "6", "7", "8") for t in [catalogue.sid(i)] * G]
    rollout = SIDRollout(tok, build_trie(model, tok, catalogue), num_generations=G, add_target=True)
    whole = rollout(prompts, _trainer(model, 0, targets))
    n = len(prompts) // world  # TRL hands each rank a contiguous slice: whole groups when n % G == 0
    parts = [rollout(prompts[r * n:(r + 1) * n], _trainer(model, r, targets[r * n:(r + 1) * n]))
             for r in range(world)]
    for key in ("prompt_ids", "completion_ids", "beam_rank"):
        assert [x for p in parts for x in p[key]] == whole[key], key
    assert whole["beam_rank"] == list(range(G)) * len(items)
    # target-in-group: every group holds its target, whichever rank rolled it out
    for g in range(len(items)):
        want = tok(targets[g * G], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert want in whole["completion_ids"][g * G:(g + 1) * G]
