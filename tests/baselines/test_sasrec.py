from collections import Counter

import pytest
import torch

from minirec.baselines import sasrec_train
from minirec.baselines.sasrec import IGNORE, SASRec, SASRecConfig, history_batch, item_index, training_examples
from minirec.baselines.sasrec_train import rank_rows, seed_everything, train_epoch
from minirec.errors import MinirecError

SMALL = dict(hidden_size=32, num_heads=2, inner_size=64, num_layers=1)


def decode(inputs, labels):
    """(context ids, target id) for every labelled position."""
    pairs = []
    for x, y in zip(inputs.tolist(), labels.tolist()):
        pairs += [(tuple(x[: p + 1]), t + 1) for p, t in enumerate(y) if t != IGNORE]
    return pairs


def test_examples_hold_every_train_row_once_and_nothing_else(industrial):
    rows = industrial.split("train")[:2000]
    ids = item_index(industrial.catalogue)
    inputs, labels = training_examples(rows, ids, max_len=10)
    expected = Counter((tuple(ids[i] for i in r.history[-10:]), ids[r.target]) for r in rows)
    assert Counter(decode(inputs, labels)) == expected
    assert len(inputs) < len(rows) / 2  # rows that extend each other share a sequence


def test_examples_truncate_history_to_max_len(tiny):
    ids = item_index(tiny.catalogue)
    inputs, labels = training_examples(tiny.split("train"), ids, max_len=2)
    assert inputs.shape[1] == 2
    assert ((ids["2"], ids["3"]), ids["2"]) in decode(inputs, labels)  # "1 2 3 -> 2" keeps its last two


def test_training_sees_only_the_train_split(tiny_dir, tmp_path, monkeypatch):
    """No valid/test target reaches the training tensors: item 7 is only ever a valid/test target."""
    from minirec.data import load_dataset

    seen = []
    real = sasrec_train.training_examples

    def spy(rows, *args):
        seen.append(list(rows))
        return real(rows, *args)

    monkeypatch.setattr(sasrec_train, "training_examples", spy)
    config = SASRecConfig(data_dir=str(tiny_dir), output_dir=str(tmp_path / "out"), max_epochs=1, **SMALL)
    sasrec_train.run(config)
    data = load_dataset(tiny_dir)
    assert seen == [data.split("train")]
    inputs, labels = real(seen[0], item_index(data.catalogue), config.max_len)
    item7 = item_index(data.catalogue)["7"]
    assert not (inputs == item7).any() and not (labels == item7 - 1).any()


def test_a_few_steps_lower_the_training_loss(industrial):
    generator = seed_everything(0)
    ids = item_index(industrial.catalogue)
    inputs, labels = training_examples(industrial.split("train")[:200], ids, 10)
    model = SASRec(len(ids), SASRecConfig(dropout=0.0, **SMALL))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = [train_epoch(model, optimizer, inputs, labels, 128, generator) for _ in range(6)]
    assert losses[-1] < losses[0] - 0.5, losses


def test_scores_cover_every_catalogue_item(tiny):
    seed_everything(0)
    ids = item_index(tiny.catalogue)
    config = SASRecConfig(top_k=50, **SMALL)
    model = SASRec(len(ids), config).eval()
    x, last = history_batch([r.history for r in tiny.split("test")], ids, config.max_len)
    assert model.scores(model(x)[torch.arange(len(x)), last]).shape == (2, len(tiny.catalogue))
    for sids in rank_rows(model, tiny.split("test"), ids, tiny.catalogue, config):
        assert sorted(sids) == sorted(tiny.catalogue.distinct_sids())  # every SID, each once


def test_padding_after_the_history_does_not_change_its_scores(tiny):
    seed_everything(0)
    model = SASRec(7, SASRecConfig(**SMALL)).eval()
    short = model(torch.tensor([[3, 1]]))[0, -1]
    padded = model(torch.tensor([[3, 1, 0, 0, 0]]))[0, 1]
    assert torch.allclose(short, padded, atol=1e-5)


def test_same_seed_same_run(tiny_dir, tmp_path):
    runs = [sasrec_train.run(SASRecConfig(data_dir=str(tiny_dir), output_dir=str(tmp_path / str(i)), max_epochs=2,
                                          **SMALL)) for i in range(2)]
    assert runs[0]["train"]["valid_curve"][-1]["train_loss"] == runs[1]["train"]["valid_curve"][-1]["train_loss"]
    assert runs[0]["test"] == {**runs[1]["test"], "wall_seconds": runs[0]["test"]["wall_seconds"]}


@pytest.mark.parametrize("flags, message", [(dict(hidden_size=30, num_heads=4), "not a multiple"),
                                            (dict(dropout=1.0), "--dropout"), (dict(bogus=1), "unknown flag")])
def test_bad_config_is_an_error(flags, message):
    with pytest.raises(MinirecError, match=message):
        SASRecConfig.from_kwargs(**flags)


def test_early_stopping_restores_the_best_epoch(tiny, monkeypatch):
    """Scripted valid scores 0.1, 0.3, 0.2, 0.25: patience 2 stops after epoch 4 and keeps epoch 2's weights."""
    scripted, weights = iter([0.1, 0.3, 0.2, 0.25, 0.9]), []

    def fake_valid(model, *args):
        weights.append(model.item_emb.weight.detach().clone())
        return {"HR@10": next(scripted), "NDCG@10": 0.0}

    monkeypatch.setattr(sasrec_train, "evaluate_split", fake_valid)
    ids = item_index(tiny.catalogue)
    config = SASRecConfig(max_epochs=10, patience=2, learning_rate=0.05, **SMALL)
    model = SASRec(len(ids), config)
    train = sasrec_train.fit(model, tiny.split("train"), tiny.split("valid"), ids, tiny.catalogue, config,
                             seed_everything(0))
    assert (train["best_epoch"], train["epochs_run"]) == (2, 4)
    assert [c["HR@10"] for c in train["valid_curve"]] == [0.1, 0.3, 0.2, 0.25]
    assert torch.equal(model.item_emb.weight, weights[1]) and not torch.equal(weights[1], weights[3])
