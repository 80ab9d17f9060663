"""End-to-end index building on a synthetic catalogue (fake encoder), and the CLI's errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from minirec.sid import load_catalogue
from minirec.sid.build import build_index, index_text
from minirec.sid.text import embed_items
from tests.conftest import INDUSTRIAL, ROOT

WORDS = ["solder", "glove", "tape", "filament", "relay", "staple", "beaker", "pipette"]


def make_items(path, n=80):
    items = {str(i): {"title": f"{WORDS[i % 8]} model {i}", "description": f"['{WORDS[(i * 3) % 8]} kit']"}
             for i in range(n)}
    path.write_text(json.dumps(items))
    return items


def fake_encode(texts):
    """Deterministic 'embeddings': bag of the words above plus a per-text jitter (collisions happen)."""
    out = []
    for t in texts:
        v = np.array([t.count(w) for w in WORDS], dtype=float)
        v[0] += (sum(map(ord, t)) % 7) * 0.01
        out.append(v)
    return np.array(out)


@pytest.mark.parametrize("method", ["rqkmeans", "rqkmeans_balanced", "rqvae", "rqvae_vqp"])
def test_build_writes_a_loadable_unique_index_and_a_report(tmp_path, method):
    make_items(tmp_path / "item.json")
    out = tmp_path / "index.json"
    report = build_index(tmp_path / "item.json", out, method=method, levels=2, codebook_size=4, seed=1,
                         encoder="fake", encode=fake_encode,
                         **({"rqvae_epochs": 5} if method.startswith("rqvae") else {}))
    cat = load_catalogue(out, tmp_path / "item.json")
    assert len(cat) == 80 and len(cat.items_by_sid) == 80 and list(cat.sids) == [str(i) for i in range(80)]
    assert all(t[0].startswith("<a_") and t[1].startswith("<b_") for t in cat.sids.values())
    saved = json.loads((tmp_path / "index.report.json").read_text())
    assert saved["collisions_after"]["colliding_items"] == 0 and saved["collisions_before"]["colliding_items"] > 0
    assert saved["needed_extra_level"] == len(saved["extra_level_items"])
    assert sum(len(t) == 3 for t in cat.sids.values()) == saved["needed_extra_level"]
    assert [lv["level"] for lv in saved["per_level"]][:2] == ["a", "b"]
    assert 0 < saved["per_level"][0]["utilization"] <= 1 and saved["per_level"][0]["perplexity"] >= 1
    assert {"embed", "quantize", "collisions", "total"} <= saved["timings_s"].keys()
    assert report["method"] == method and (tmp_path / "item_embeddings.npy").is_file()


def test_same_seed_same_bytes_and_cache_reused(tmp_path):
    make_items(tmp_path / "item.json")
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return fake_encode(texts)

    kwargs = {"method": "rqkmeans_balanced", "levels": 3, "codebook_size": 4, "seed": 7, "encoder": "fake",
              "encode": counting}
    build_index(tmp_path / "item.json", tmp_path / "a.json", **kwargs)
    build_index(tmp_path / "item.json", tmp_path / "b.json", **kwargs)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert calls == [80]  # the second build read item_embeddings.npy


def test_index_text_matches_the_shipped_layout():
    shipped = (INDUSTRIAL / "index.json").read_text()
    assert index_text({k: list(v) for k, v in load_catalogue(INDUSTRIAL / "index.json").sids.items()}) == shipped


def run_build(*args):
    return subprocess.run([sys.executable, "-m", "minirec.sid", "build", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_cli_builds_from_a_cached_embedding(tmp_path):
    items = make_items(tmp_path / "item.json", n=40)
    embed_items(items, encoder="fake", cache=tmp_path / "emb.npy", encode=fake_encode)
    proc = run_build("--items", tmp_path / "item.json", "--out", tmp_path / "index.json", "--levels", 2,
                     "--codebook_size", 4, "--encoder", "fake", "--embeddings_cache", tmp_path / "emb.npy")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "collisions:" in proc.stdout and len(load_catalogue(tmp_path / "index.json").items_by_sid) == 40
    again = ["--items", tmp_path / "item.json", "--out", tmp_path / "index.json", "--levels", 2, "--codebook_size", 4,
             "--encoder", "fake", "--embeddings_cache", tmp_path / "emb.npy"]
    assert run_build(*again).returncode == 2  # an existing --out is refused
    assert run_build(*again, "--overwrite", "True").returncode == 0  # unless asked


@pytest.mark.parametrize("args, message", [
    (["--items", "{d}/nope.json", "--out", "{d}/i.json"], "item file not found"),
    (["--items", "{d}/item.json", "--out", "{d}/i.json", "--method", "pq"], "--method 'pq': choose one of"),
    (["--items", "{d}/item.json", "--out", "{d}/i.json", "--codebook_size", 256], "40 items but --codebook_size 256"),
    (["--items", "{d}/item.json", "--out", "{d}/i.json", "--levels", 0], "--levels 0"),
    (["--items", "{d}/item.json", "--out", "{d}/i.txt"], "is a .json file"),
    (["--items", "{d}/item.json", "--out", "{d}/i.json", "--bogus", 1], "unknown flag(s) --bogus"),
    (["--items", "{d}/item.json", "--out", "{d}/i.json", "--codebook_size", 4, "--encoder", "/no/model"],
     "models are never downloaded"),
    (["--items", "{d}/bad.json", "--out", "{d}/i.json"], "not valid JSON"),
    (["--items", "{d}/item.json", "--out", "{d}/item.json"], "--out {d}/item.json already exists"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, message):
    make_items(tmp_path / "item.json", n=40)
    (tmp_path / "bad.json").write_text("{")
    proc = run_build(*[a.format(d=tmp_path) if isinstance(a, str) else a for a in args])
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message.format(d=tmp_path) in last and "Traceback" not in proc.stderr, last
    assert not (tmp_path / "i.json").exists()
