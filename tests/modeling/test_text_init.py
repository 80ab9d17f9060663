import json

import numpy as np
import pytest
import torch

from minirec.errors import MinirecError
from minirec.modeling.text_init import init_text_rows, text_rows
from minirec.sid.text import load_item_embeddings
from minirec.sid.catalogue import Catalogue
from minirec.sid.text import _sha256

# Items 1 and 2 share the first code and have near text; 3 and 4 share the other one.
SIDS = {"1": ("<a_0>", "<b_0>"), "2": ("<a_0>", "<b_1>"), "3": ("<a_1>", "<b_0>"), "4": ("<a_1>", "<b_1>")}
TOKENS = ["<a_0>", "<a_1>", "<b_0>", "<b_1>"]


def _embeddings():
    x, y = np.eye(8)[0], np.eye(8)[1]
    return {"1": x + 0.1 * y, "2": x - 0.1 * y, "3": y + 0.1 * x, "4": y - 0.1 * x}


def test_rows_are_mean_residuals_projected_and_scaled():
    cat = Catalogue(SIDS, {})
    rows = text_rows(cat, _embeddings(), TOKENS, width=64, std=0.02, seed=0)
    assert rows.shape == (4, 64)
    for level in (rows[:2], rows[2:]):  # each level centred, with a fresh row's spread
        assert level.std(correction=0).item() == pytest.approx(0.02, rel=1e-4)
        assert level.mean(0).abs().max().item() < 1e-6
    # level a: the two first codes are the mean texts of their items, x+ and y+, centred: opposite
    assert torch.cosine_similarity(rows[0], rows[1], dim=0) < -0.99
    # level b: what is left after the first code: b_0 = (+0.1y, +0.1x) on average, b_1 its opposite
    assert torch.cosine_similarity(rows[2], rows[3], dim=0) < -0.99
    same = text_rows(cat, _embeddings(), TOKENS, width=64, std=0.02, seed=0)
    assert torch.equal(rows, same)  # seeded: the same start every run


def test_init_writes_the_sid_rows_only(tiny_model, catalogue):
    model, tok, ids = tiny_model
    tokens = catalogue.sid_tokens()
    rng = np.random.default_rng(0)
    embeddings = {i: rng.standard_normal(16).astype(np.float32) for i in catalogue.sids}
    before = model.get_input_embeddings().weight.detach().clone()
    init_text_rows(model, ids, tokens, catalogue, embeddings)
    after = model.get_input_embeddings().weight.detach()
    changed = (after != before).any(-1).nonzero().flatten().tolist()
    assert sorted(changed) == sorted(ids)
    torch.testing.assert_close(after[ids], text_rows(catalogue, embeddings, tokens, after.shape[1], 0.02))


def test_bad_embeddings_are_refused(tmp_path):
    cat = Catalogue(SIDS, {})
    with pytest.raises(MinirecError, match="no row for 1 catalogue items"):
        text_rows(cat, {k: v for k, v in _embeddings().items() if k != "4"}, TOKENS, 8, 0.02)
    path = tmp_path / "e.npy"
    np.save(path, np.zeros((3, 8), np.float32))
    with pytest.raises(MinirecError, match="3 rows but the catalogue has 4 items"):
        load_item_embeddings(path, ["1", "2", "3", "4"])
    np.save(path, np.ones((4, 8), np.float32))
    (tmp_path / "e.npy.json").write_text(json.dumps({"item_ids_sha256": _sha256(["4", "3", "2", "1"])}))
    with pytest.raises(MinirecError, match="other item ids"):
        load_item_embeddings(path, ["1", "2", "3", "4"])
    (tmp_path / "e.npy.json").write_text(json.dumps({"item_ids_sha256": _sha256(["1", "2", "3", "4"])}))
    assert load_item_embeddings(path, ["1", "2", "3", "4"]).shape == (4, 8)
    with pytest.raises(MinirecError, match="no such file"):
        load_item_embeddings(tmp_path / "none.npy", ["1"])
