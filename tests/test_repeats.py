"""History items in the ranked list: exact scores against the beam, the rerank by hand, the flags,
and evaluate.py --repeat_bonus on a small trained run."""

import json
from unittest import mock

import pytest
import torch

from minirec import beam
from minirec.constrained import SIDTrie
from minirec.data import load_dataset
from minirec.decoding import model_vocab_size, rank_sids
from minirec.errors import MinirecError
from minirec.evaluate import EvalConfig, evaluate
from minirec.recommend import RecommendConfig
from minirec.repeats import RepeatRates, history_scores, history_sids, repeat_rates, rerank_with_history
from minirec.run_info import RunInfo
from minirec.sid.catalogue import Catalogue
from tests.conftest import INDUSTRIAL, bench_module


def mixed_depth(catalogue, items):
    """The catalogue with every other item of ``items`` one token deeper: SIDs of 3 and 4 tokens."""
    extra = catalogue.sid_tokens()[0]  # a token the model has
    deeper = {item: (*catalogue.sids[item], extra) for item in sorted(items)[::2]}
    return Catalogue({**catalogue.sids, **deeper}, catalogue.titles)


@pytest.mark.parametrize("template,decoder", [("compact", "_SharedPrefixDecoder"), ("sids", "_ExpandedDecoder")])
def test_history_scores_equal_the_beams_scores(tiny_model, catalogue, industrial, template, decoder):
    model, tok, _ = tiny_model
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a sharper distribution than the mean-initialised SID rows give
        model.get_input_embeddings().weight.normal_(0, 0.5)
    rows = industrial.split("test")[:5]
    histories = [r.history for r in rows]
    cat = mixed_depth(catalogue, {i for h in histories for i in h[-4:]})
    # A trie over the histories' SIDs and a few others, and a beam at least that wide: the search is
    # exhaustive, so every history SID comes back with the beam's score, pruned by no narrower beam.
    sids = {cat.sid(i) for h in histories for i in h} | set(list(cat.items_by_sid)[:20])
    trie = SIDTrie([tok.convert_tokens_to_ids(list(cat.sids[cat.items_by_sid[s][0]])) for s in sorted(sids)],
                   tok.eos_token_id, model_vocab_size(model), tok.pad_token_id)
    with mock.patch.object(beam, "_decoder_for", lambda m: getattr(beam, decoder)):
        ranked = rank_sids(model, tok, cat, histories, template, 4, num_beams=len(sids), batch_size=2, trie=trie,
                           progress=False)
    exact = history_scores(model, tok, cat, histories, template, 4, batch_size=2)
    depths = set()
    for row, scores, history in zip(ranked, exact, histories):
        beam_scores = dict(row)
        assert len(row) == len(sids) and set(scores) == set(history_sids(history, cat, 4))  # the last 4 only
        for sid, score in scores.items():
            assert score == pytest.approx(beam_scores[sid], abs=1e-4), sid
            depths.add(len(cat.sids[cat.items_by_sid[sid][0]]))
    assert depths == {3, 4}
    assert not model.training


def test_rerank_by_hand():
    ranked = [[("x", -1.0), ("y", -2.0), ("z", -3.0)], [("p", -1.0)]]
    exact = [{"h": -2.5, "y": -2.0}, {"p": -1.0, "q": -9.0}]
    histories = [["y", "h", "y"], ["q", "p"]]  # oldest first: y is the most recent (age 0), h age 1
    assert rerank_with_history(ranked, exact, histories, bonus=0.0) == ranked  # off: the beam's lists
    out = rerank_with_history(ranked, exact, histories, bonus=1.0, decay=0.5)
    # y: -2 + 1 = -1 (ties x, which the beam ranked first); h: -2.5 + 0.5 = -2; z drops out (length 3)
    assert out[0] == [("x", -1.0), ("y", -1.0), ("h", -2.0)]
    assert out[1] == [("p", 0.0)]  # p: -1 + 1; q: -9 + 0.5 is below it, and the list keeps its one slot
    assert rerank_with_history(ranked, exact, histories, bonus=10.0)[0] == [("y", 8.0), ("h", 7.5), ("x", -1.0)]
    with pytest.raises(ValueError, match="not in the row's history"):
        rerank_with_history(ranked, [{"w": 0.0}, {}], histories, bonus=1.0)


def test_repeat_rates_by_hand(catalogue):
    from minirec.data.readers import Interaction

    a, b, c = sorted(catalogue.sids)[:3]
    rows = [Interaction("u1", (a, b), a), Interaction("u2", (a,), c), Interaction("u3", (b, a, a), b),
            Interaction("u4", (c, b), b)]  # the prompt shows the last 2: u3 shows (a, a), its b is too old
    rates = repeat_rates(rows, catalogue, max_history=2, smoothing=1.0)
    base = 2 / 6  # shown: a in 3 rows (re-bought in 1), b in 2 (1), c in 1 (0)
    sid = catalogue.sid
    assert rates(sid(a)) == pytest.approx((1 + base) / 4) and rates(sid(b)) == pytest.approx((1 + base) / 3)
    assert rates(sid(c)) == pytest.approx(base / 2) and rates("<never shown>") == pytest.approx(base)


def test_rerank_with_prior_by_hand():
    import math

    ranked = [[("x", math.log(0.3)), ("y", math.log(0.2)), ("z", math.log(0.1))]]
    exact = [{"h": math.log(0.01), "k": math.log(0.01)}]
    rates = RepeatRates({"h": 0.5, "k": 0.001}, base=0.02)
    out = rerank_with_history(ranked, exact, [["k", "h"]], bonus=0.0, prior=1.0, rates=rates)
    # h: 0.01 + 0.5 = 0.51 leads; k: 0.01 + 0.001 stays below z and drops out of the 3 slots
    assert [s for s, _ in out[0]] == ["h", "x", "y"] and out[0][0][1] == pytest.approx(math.log(0.51))
    with pytest.raises(ValueError, match="repeat rates"):
        rerank_with_history(ranked, exact, [["k", "h"]], bonus=0.0, prior=1.0)
    # CF-guided decoding: the teacher's weighted log-probability joins after the prior
    teacher = [{"h": math.log(0.1), "k": 0.0, "x": -9.0}]
    longer = [ranked[0] + [("w", -50.0)]]
    out = rerank_with_history(longer, exact, [["k", "h"]], bonus=0.0, prior=1.0, rates=rates, teacher_scores=teacher)
    assert dict(out[0])["h"] == pytest.approx(math.log(0.51) + math.log(0.1))
    assert [s for s, _ in out[0]] == ["x", "y", "z", "h"]  # h now below z; the beam's own scores are untouched


@pytest.mark.parametrize("config", [EvalConfig, RecommendConfig])
def test_repeat_options_are_checked(config):
    extra = {"history": "117"} if config is RecommendConfig else {}
    ok = config.from_kwargs(model_path="run", repeat_bonus="0.5", repeat_decay="0.8", **extra)
    assert (ok.repeat_bonus, ok.repeat_decay) == (0.5, 0.8)
    assert config.from_kwargs(model_path="run", **extra).repeat_bonus == 0.0  # off by default
    for bad, match in ((dict(repeat_bonus=-1), "--repeat_bonus -1"), (dict(repeat_decay=0), "--repeat_decay 0"),
                       (dict(repeat_decay=1.5), r"\(0, 1\]"), (dict(repeat_prior=-0.5), "--repeat_prior -0.5")):
        with pytest.raises(MinirecError, match=match) as err:
            config.from_kwargs(model_path="run", **bad, **extra)
        assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from minirec.sft import SFTConfig
    from minirec.sft.train import train

    out = tmp_path_factory.mktemp("repeats") / "run"
    train(SFTConfig(output_dir=str(out), data_dir=str(INDUSTRIAL), tiny_hidden_size=64, tiny_num_layers=2,
                    max_train_rows=64, max_valid_rows=8, batch_size=16, micro_batch_size=16, max_steps=2,
                    report_to="none", greedy_eval_rows=0, tasks="next_sid", select_by="loss"))
    return out


@pytest.mark.slow
def test_evaluate_with_repeat_bonus(trained_run, tmp_path):
    common = dict(split="valid", num_beams=10, batch_size=8, max_rows=40, ks="1,10")  # valid rows 34 and 37 re-buy
    plain = evaluate(str(trained_run), output_dir=str(tmp_path / "plain"), **common)
    m = evaluate(str(trained_run), output_dir=str(tmp_path / "bonus"), repeat_bonus=1000.0, repeat_decay=0.9,
                 **common)
    written = json.loads((tmp_path / "bonus" / "metrics.json").read_text())
    assert (written["repeat_bonus"], written["repeat_decay"]) == (1000.0, 0.9) and plain["repeat_bonus"] == 0.0
    assert m["repeat_rows"] == 2 and m["repeat_rows"] + m["new_rows"] == 40
    assert {"HR@10_repeat", "NDCG@10_repeat", "HR@10_new", "NDCG@10_new"} <= set(written)
    # a bonus that outweighs any log-probability: each row's history SIDs lead its list, so every re-buy hits
    assert m["HR@10_repeat"] == 1.0
    catalogue = load_dataset(RunInfo.read(trained_run).data_dir, splits=()).catalogue
    for line in (tmp_path / "bonus" / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        history = set(history_sids(row["history"], catalogue, 10))  # at most 10 distinct: within the beam width
        assert set(row["predictions"][: len(history)]) == history and len(row["predictions"]) == 10


def _bench():
    return bench_module("repeat_bonus")


def test_prior_on_the_train_split_is_refused(capsys):
    with pytest.raises(MinirecError, match="each row would count its own target"):
        EvalConfig.from_kwargs(model_path="run", split="train", repeat_prior="0.5")
    with pytest.raises(SystemExit) as exit:
        _bench().main(["--model_path", "nowhere", "--split", "train", "--priors", "0,1"])
    assert exit.value.code == 2 and "each row would count its own target" in capsys.readouterr().err


def test_bench_refuses_test_split(capsys):
    with pytest.raises(SystemExit) as exit:
        _bench().main(["--model_path", "nowhere", "--split", "test"])
    assert exit.value.code == 2 and "never on test" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_grid_matches_evaluate(trained_run, tmp_path):
    common = dict(split="valid", num_beams=10, batch_size=8, max_rows=40, ks="10")
    plain = evaluate(str(trained_run), output_dir=str(tmp_path / "plain"), **common)
    boosted = evaluate(str(trained_run), output_dir=str(tmp_path / "bonus"), repeat_bonus=2.0, repeat_decay=0.5,
                       **common)
    prior = evaluate(str(trained_run), output_dir=str(tmp_path / "prior"), repeat_prior=50.0, **common)
    assert json.loads((tmp_path / "prior" / "metrics.json").read_text())["repeat_prior"] == 50.0
    out = _bench().main(["--model_path", str(trained_run), "--split", "valid", "--num_beams", "10",
                         "--max_rows", "40", "--priors", "0,50", "--bonuses", "0,2", "--decays", "0.5",
                         "--out", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text())["grid"] == out["grid"] and out["repeat_rows"] == 2
    grid = {(g["prior"], g["bonus"]): g for g in out["grid"]}
    assert len(grid) == 4 and grid[50.0, 0.0]["HR@10_repeat"] > grid[0.0, 0.0]["HR@10_repeat"]
    # one decode, reranked: what evaluate.py reports
    for row, metrics in zip((grid[0.0, 0.0], grid[0.0, 2.0], grid[50.0, 0.0]), (plain, boosted, prior)):
        for key in ("HR@10", "NDCG@10", "HR@10_repeat", "NDCG@10_new"):
            assert row[key] == pytest.approx(metrics[key]), key
    assert out["max_score_diff_vs_beam"] < 1e-4
