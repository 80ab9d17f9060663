"""The collaborative teacher (a saved SASRec) and CF-guided beam search."""

import json
import math

import pytest
import torch

from minirec.baselines import sasrec_train
from minirec.baselines.sasrec import SASRec, SASRecConfig
from minirec.beam import constrained_beam_search
from minirec.constrained import SIDTrie
from minirec.decoding import model_vocab_size
from minirec.errors import MinirecError
from minirec.sid.catalogue import Catalogue
from minirec.teacher import CFTeacher, PrefixScores, group_logsumexp, load_teacher
from minirec.tokenization import encode_prompts
from tests.baselines.conftest import write_dataset
from tests.test_beam import exhaustive_scores, small_catalogue

SMALL = dict(hidden_size=32, num_heads=2, inner_size=64, num_layers=1)


@pytest.fixture
def trained(tmp_path):
    """A SASRec trained 2 epochs on the six-item dataset: (teacher dir, dataset)."""
    from minirec.data import load_dataset

    data_dir = write_dataset(tmp_path / "tiny")
    out = tmp_path / "sasrec"
    sasrec_train.run(SASRecConfig(data_dir=str(data_dir), output_dir=str(out), max_epochs=2, **SMALL))
    return out, load_dataset(data_dir)


def test_sasrec_saves_a_teacher_that_scores_like_the_trained_model(trained):
    out, data = trained
    meta = json.loads((out / "teacher.json").read_text())
    assert meta["index_sha256"] == data.catalogue.index_sha256 and meta["items"] == list(data.catalogue.sids)
    teacher = load_teacher(out, data.catalogue)
    histories = [r.history for r in data.split("test")]
    logp = teacher.item_logp(histories)
    assert logp.shape == (2, 7) and torch.allclose(logp.exp().sum(-1), torch.ones(2))
    # the saved weights are the trained ones: the teacher ranks test as metrics.json recorded
    metrics = json.loads((out / "metrics.json").read_text())
    from minirec.baselines.scoring import ranked_sids, score

    lists = [ranked_sids((teacher.items[j] for j in row.argsort(descending=True).tolist()), data.catalogue)
             for row in logp]
    assert score(lists, data.split("test"), data.catalogue)["MRR"] == pytest.approx(metrics["test"]["MRR"])


def test_sid_logp_sums_a_collision_group(trained):
    out, data = trained
    teacher = load_teacher(out, data.catalogue)
    history = [data.split("test")[0].history]
    p = teacher.item_logp(history)[0].exp()
    col = {item: j for j, item in enumerate(teacher.items)}
    sid = teacher.sid_logp(history, data.catalogue)[0]
    assert set(sid) == set(data.catalogue.items_by_sid)
    assert sid["<a_3><b_1>"] == pytest.approx(float((p[col["5"]] + p[col["6"]]).log()), abs=1e-5)  # items 5 and 6
    assert sid["<a_1><b_2>"] == pytest.approx(float(p[col["2"]].log()), abs=1e-5)
    assert sum(torch.tensor(list(sid.values())).exp()) == pytest.approx(1.0, abs=1e-5)


def test_group_logsumexp_is_exact_where_exp_underflows():
    values = torch.tensor([[-1000.0, -1001.0, 0.0, float("-inf")]])
    out = group_logsumexp(values, torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 2]), 4)
    assert out[0, 0] == pytest.approx(-1000 + torch.log1p(torch.exp(torch.tensor(-1.0))).item())
    assert out[0, 1] == 0.0 and out[0, 2] == float("-inf") and out[0, 3] == float("-inf")  # empty group


def test_teacher_refuses_missing_dirs_weights_and_other_catalogues(trained, tmp_path):
    out, data = trained
    with pytest.raises(MinirecError, match="no such directory"):
        load_teacher(tmp_path / "nowhere")
    (tmp_path / "metrics_only").mkdir()
    (tmp_path / "metrics_only" / "metrics.json").write_text("{}")
    with pytest.raises(MinirecError, match="no teacher.json and model.safetensors"):
        load_teacher(tmp_path / "metrics_only")
    other = Catalogue({"1": ("<a_9>", "<b_9>")}, index_sha256="0" * 64)
    with pytest.raises(MinirecError, match="another catalogue"):
        load_teacher(out, other)
    (out / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(MinirecError, match="cannot load the teacher's weights"):
        load_teacher(out)


def fake_teacher(catalogue, seed=0):
    torch.manual_seed(seed)
    config = SASRecConfig(**SMALL, dropout=0.0)
    model = SASRec(len(catalogue), config)
    with torch.no_grad():
        model.item_emb.weight.normal_(0, 1.0)  # a spread-out distribution over items
    return CFTeacher(model, config, list(catalogue.sids), catalogue.index_sha256, "memory")


def small_setup(tiny_model, industrial, catalogue):
    """A catalogue of small_catalogue's SIDs (one with a two-item collision group, two of depth 2
    that prefix depth-3 ones), its trie, its teacher, prompts and histories over its items."""
    model, tok, ids = tiny_model
    model.eval()
    torch.manual_seed(2)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.5)
    seqs = small_catalogue(tok, ids)
    sids = {f"i{j}": tuple(tok.convert_ids_to_tokens(list(s))) for j, s in enumerate(seqs)}
    sids["dup"] = sids["i5"]  # a collision group
    small = Catalogue(sids, index_sha256="f" * 64)
    trie = SIDTrie(seqs, tok.eos_token_id, model_vocab_size(model), tok.pad_token_id)
    histories = [["i1", "i7", "i30"], ["i3"], ["dup", "i12", "i37", "i2"]]
    from minirec.prompts import next_sid_prompt

    prompts = encode_prompts(tok, [next_sid_prompt(r.history, catalogue) for r in industrial.split("test")[:3]])
    return model, tok, small, trie, seqs, histories, prompts


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_full_width_fused_beam_equals_exhaustive_fused_scoring(tiny_model, industrial, catalogue, weight):
    model, tok, small, trie, seqs, histories, prompts = small_setup(tiny_model, industrial, catalogue)
    teacher = fake_teacher(small)
    cf = PrefixScores(teacher, small, trie, lambda sid: tok.convert_tokens_to_ids(list(small.sids[
        small.items_by_sid[sid][0]])), weight)
    K = len(seqs)  # as wide as the catalogue: nothing is pruned, so the fused ranking must be exact
    beams = constrained_beam_search(model, prompts, trie, K, tok.pad_token_id,
                                    prefix_scores=lambda s, e: cf.tables(histories[s:e]))
    sid_logp = teacher.sid_logp(histories, small)
    with torch.no_grad():
        for prompt, row, cf_row in zip(prompts, beams, sid_logp):
            lm = exhaustive_scores(model, prompt, seqs, tok.eos_token_id)
            names = ["".join(tok.convert_ids_to_tokens(list(s))) for s in seqs]
            fused = sorted(((s + weight * cf_row[n], q) for s, n, q in zip(lm, names, seqs)), reverse=True)
            assert [b.tokens for b in row] == [q for _, q in fused]
            torch.testing.assert_close(torch.tensor([b.score for b in row]), torch.tensor([s for s, _ in fused]),
                                       atol=1e-4, rtol=0)


def test_prefix_scores_of_weight_zero_give_todays_beam(tiny_model, industrial, catalogue):
    model, tok, small, trie, seqs, histories, prompts = small_setup(tiny_model, industrial, catalogue)
    cf = PrefixScores(fake_teacher(small), small, trie,
                      lambda sid: tok.convert_tokens_to_ids(list(small.sids[small.items_by_sid[sid][0]])), 0.0)
    plain = constrained_beam_search(model, prompts, trie, 6, tok.pad_token_id)
    fused = constrained_beam_search(model, prompts, trie, 6, tok.pad_token_id,
                                    prefix_scores=lambda s, e: cf.tables(histories[s:e]))
    for x, y in zip(plain, fused):
        assert [b.tokens for b in x] == [b.tokens for b in y] and [b.score for b in x] == [b.score for b in y]


@pytest.fixture(scope="module")
def run_and_teacher(tmp_path_factory):
    """A few SFT steps and a one-epoch SASRec on the bundled Industrial data."""
    from minirec.sft import SFTConfig
    from minirec.sft.train import train
    from tests.conftest import INDUSTRIAL

    root = tmp_path_factory.mktemp("cf")
    train(SFTConfig(output_dir=str(root / "run"), data_dir=str(INDUSTRIAL), tiny_hidden_size=64, tiny_num_layers=2,
                    max_train_rows=64, max_valid_rows=8, batch_size=16, micro_batch_size=16, max_steps=2,
                    report_to="none", greedy_eval_rows=0, tasks="next_sid", select_by="loss"))
    sasrec_train.run(SASRecConfig(data_dir=str(INDUSTRIAL), output_dir=str(root / "sasrec"), max_epochs=1,
                                  max_train_rows=4000, max_eval_rows=50, split="valid", **SMALL))
    return root / "run", root / "sasrec"


def _bench():
    from tests.conftest import bench_module

    return bench_module("cf_weight")


def test_bench_refuses_test_split(capsys):
    with pytest.raises(SystemExit) as exit:
        _bench().main(["--model_path", "nowhere", "--cf_model", "nowhere", "--split", "test"])
    assert exit.value.code == 2 and "never on test" in capsys.readouterr().err


@pytest.mark.slow
def test_cf_guided_evaluation_and_its_sweep(run_and_teacher, tmp_path):
    from minirec.evaluate import evaluate

    run, teacher = run_and_teacher
    common = dict(split="valid", num_beams=10, batch_size=8, max_rows=40, ks="10")

    def predictions(name):
        return [json.loads(x)["predictions"] for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]

    plain = evaluate(str(run), output_dir=str(tmp_path / "plain"), **common)
    zero = evaluate(str(run), output_dir=str(tmp_path / "zero"), cf_model=str(teacher), cf_weight=0.0, **common)
    fused = evaluate(str(run), output_dir=str(tmp_path / "fused"), cf_model=str(teacher), cf_weight=1.0, **common)
    both = evaluate(str(run), output_dir=str(tmp_path / "both"), cf_model=str(teacher), cf_weight=1.0,
                    repeat_prior=50.0, **common)
    assert predictions("plain") == predictions("zero") and plain["HR@10"] == zero["HR@10"]
    assert predictions("fused") != predictions("plain")
    written = json.loads((tmp_path / "fused" / "metrics.json").read_text())
    assert written["cf_weight"] == 1.0 and written["cf_model"]["path"] == str(teacher)
    assert plain["cf_weight"] == 0.0 and "cf_model" not in plain
    # the sweep decodes the same way evaluate.py does, and composes with the prior the same way
    out = _bench().main(["--model_path", str(run), "--cf_model", str(teacher), "--num_beams", "10", "--max_rows", "40",
                         "--weights", "0,1", "--out", str(tmp_path / "g.json")])
    grid = {(g["mode"], g["weight"]): g for g in out["grid"]}
    assert set(grid) == {("step", 0.0), ("step", 1.0), ("union", 0.0), ("union", 1.0)}
    for key in ("HR@10", "NDCG@10"):
        assert grid["step", 0.0][key] == pytest.approx(plain[key]) == pytest.approx(grid["union", 0.0][key])
        assert grid["step", 1.0][key] == pytest.approx(fused[key])
    prior = _bench().main(["--model_path", str(run), "--cf_model", str(teacher), "--num_beams", "10", "--max_rows",
                           "40", "--weights", "1", "--modes", "step", "--repeat_prior", "50",
                           "--out", str(tmp_path / "p.json")])
    assert prior["grid"][0]["NDCG@10"] == pytest.approx(both["NDCG@10"])


@pytest.mark.slow
def test_recommend_with_a_teacher(run_and_teacher):
    import subprocess
    import sys

    from tests.conftest import ROOT

    run, teacher = run_and_teacher
    base = [sys.executable, "-m", "minirec.recommend", "--model_path", str(run), "--history", "117,118", "--top_k", "5"]
    plain = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
    fused = subprocess.run(base + ["--cf_model", str(teacher), "--cf_weight", "3"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 0 and fused.returncode == 0, fused.stderr[-2000:]
    assert fused.stdout.startswith("  1.") and fused.stdout != plain.stdout


def test_prefix_tables_by_hand(tiny_model, industrial, catalogue):
    """subtree[node] = W x log of the teacher's mass under the node; terminal only where a SID ends."""
    model, tok, small, trie, seqs, histories, prompts = small_setup(tiny_model, industrial, catalogue)
    teacher = fake_teacher(small)
    cf = PrefixScores(teacher, small, trie, lambda sid: tok.convert_tokens_to_ids(list(small.sids[
        small.items_by_sid[sid][0]])), 2.0)
    subtree, terminal = cf.tables(histories[:1])
    p = teacher.item_logp(histories[:1])[0].exp()
    col = {item: j for j, item in enumerate(teacher.items)}
    first = seqs[0][:1]  # a first-level prefix: every item whose SID starts with it
    mass = sum(float(p[col[i]]) for i, t in small.sids.items() if tuple(tok.convert_tokens_to_ids(list(t)))[:1] == first)
    node = trie.node_path(seqs[0])[0]
    assert float(subtree[0, node]) == pytest.approx(2.0 * math.log(mass), abs=1e-4)
    assert float(terminal[0, node]) == float("-inf")  # no SID ends after one token
    leaf = trie.node_path(seqs[5])[-1]  # i5 and "dup" share this SID: their mass together
    assert float(terminal[0, leaf]) == pytest.approx(2.0 * math.log(float(p[col["i5"]] + p[col["dup"]])), abs=1e-4)
    mixed = trie.node_path(seqs[-2])[-1]  # a depth-2 SID that also prefixes depth-3 ones: both scores
    assert float(terminal[0, mixed]) < float(subtree[0, mixed])


@pytest.mark.parametrize("decoder", ["_ExpandedDecoder", "chunked"])
def test_narrow_fused_beam_is_the_same_with_either_decoder_and_in_chunks(tiny_model, industrial, catalogue, decoder):
    """The flash-attention fallback decoder and max_rows chunks (which offset the prompts each chunk's
    teacher rows are read for) give the shared-prefix decoder's fused lists."""
    from unittest import mock

    from minirec import beam

    model, tok, small, trie, seqs, histories, prompts = small_setup(tiny_model, industrial, catalogue)
    cf = PrefixScores(fake_teacher(small, seed=3), small, trie,
                      lambda sid: tok.convert_tokens_to_ids(list(small.sids[small.items_by_sid[sid][0]])), 1.0)
    tables = lambda s, e: cf.tables(histories[s:e])  # noqa: E731
    ref = constrained_beam_search(model, prompts, trie, 3, tok.pad_token_id, prefix_scores=tables)
    if decoder == "chunked":
        other = constrained_beam_search(model, prompts, trie, 3, tok.pad_token_id, max_rows=3, prefix_scores=tables)
    else:
        with mock.patch.object(beam, "_decoder_for", lambda m: beam._ExpandedDecoder):
            other = constrained_beam_search(model, prompts, trie, 3, tok.pad_token_id, prefix_scores=tables)
    plain = constrained_beam_search(model, prompts, trie, 3, tok.pad_token_id)
    assert [[b.tokens for b in row] for row in ref] != [[b.tokens for b in row] for row in plain]  # fusion counts
    for x, y in zip(ref, other):
        assert [b.tokens for b in x] == [b.tokens for b in y]
        torch.testing.assert_close(torch.tensor([b.score for b in x]), torch.tensor([b.score for b in y]),
                                   atol=1e-4, rtol=0)
