"""Distilling the collaborative teacher into SFT: which history each target gets, the soft
targets by hand, and a run that trains with them."""

import math

import pytest
import torch

from minirec.data.sequences import user_sequences
from minirec.prompts import build_sequence_examples
from minirec.sft.distill import Distiller, target_histories
from minirec.tokenization import IGNORE_INDEX
from tests.conftest import INDUSTRIAL


def test_each_dense_target_gets_the_items_before_it(industrial):
    rows = industrial.split("train")[:500]
    sequences = user_sequences(rows)
    examples = build_sequence_examples(sequences, industrial.catalogue, max_history=3)
    histories = target_histories(sequences, dense=True, max_history=3)
    assert len(histories) == len(examples)
    assert [len(h) for h in histories] == [len(e.completions) for e in examples]
    # every train row's (history, target) appears: the teacher sees what precedes each target
    by_target = {(h[-3:], industrial.catalogue.sid(r.target)) for r in rows for h in [tuple(r.history)]}
    flat = {(h[-3:], sid) for hs, e in zip(histories, examples) for h, sid in zip(hs, e.completions)}
    assert by_target <= flat


@pytest.fixture
def distiller(tiny_model, catalogue):
    from minirec.baselines.sasrec import SASRec, SASRecConfig
    from minirec.decoding import build_trie
    from minirec.teacher import CFTeacher

    model, tok, _ = tiny_model
    torch.manual_seed(0)
    config = SASRecConfig(hidden_size=16, num_heads=1, inner_size=16, num_layers=1, dropout=0.0)
    sasrec = SASRec(len(catalogue), config)
    with torch.no_grad():
        sasrec.item_emb.weight.normal_(0, 1.0)
    teacher = CFTeacher(sasrec, config, list(catalogue.sids), catalogue.index_sha256, "memory")

    def token_ids(sid):
        return tok.convert_tokens_to_ids(list(catalogue.sids[catalogue.items_by_sid[sid][0]]))

    return Distiller(teacher, catalogue, build_trie(model, tok, catalogue), token_ids, 0.5), model, tok, token_ids


def test_soft_targets_by_hand(distiller, industrial, catalogue):
    """The soft cross-entropy at a target's first SID token is -sum_c q(c) log p(c), q the teacher's
    marginal over first-level codes; at the second, its conditional given the true first token."""
    dist, model, tok, token_ids = distiller
    row = industrial.split("test")[0]
    target = token_ids(catalogue.sid(row.target))
    prompt = [5, 6, 7]
    labels = [IGNORE_INDEX] * 3 + target + [tok.eos_token_id]
    example = {"input_ids": prompt + target + [tok.eos_token_id], "labels": labels,
               "cf_history": dist.encode_histories([[row.history]])[0]}
    batch = dist.collate([example], {})
    assert batch["cf_where"][:, 1].tolist() == [3, 4, 5]  # the SID tokens' label positions, not EOS
    logits = torch.randn(1, len(labels), dist.trie.vocab_size)
    got = dist.soft_loss_sum(logits, batch["cf_inputs"], batch["cf_last"], batch["cf_where"][:2])
    # by hand: the teacher's item probabilities summed by first token, then by second given the first
    p = dist.teacher.item_logp([row.history]).exp()[0]
    first, second = {}, {}
    for j, item in enumerate(dist.teacher.items):
        ids = token_ids(catalogue.sid(item))
        first[ids[0]] = first.get(ids[0], 0.0) + float(p[j])
        if ids[0] == target[0]:
            second[ids[1]] = second.get(ids[1], 0.0) + float(p[j])
    want = 0.0
    for pos, q in ((2, first), (3, second)):
        logp = logits[0, pos].log_softmax(-1)
        total = sum(q.values())
        want -= sum(v / total * float(logp[c]) for c, v in q.items())
    assert float(got) == pytest.approx(want, rel=1e-4)


@pytest.mark.slow
def test_sft_with_a_teacher_trains_and_differs_from_plain(tmp_path):
    from minirec.baselines import sasrec_train
    from minirec.baselines.sasrec import SASRecConfig
    from minirec.sft import SFTConfig
    from minirec.sft.train import train

    teacher = tmp_path / "sasrec"
    sasrec_train.run(SASRecConfig(data_dir=str(INDUSTRIAL), output_dir=str(teacher), max_epochs=1, max_train_rows=2000,
                                  max_eval_rows=20, split="valid", hidden_size=16, num_heads=1, inner_size=16,
                                  num_layers=1))
    common = dict(data_dir=str(INDUSTRIAL), tiny_hidden_size=64, tiny_num_layers=2, max_train_rows=128,
                  max_valid_rows=8, batch_size=16, micro_batch_size=8, max_steps=2, report_to="none",
                  greedy_eval_rows=0, dense=True, template="sids", tasks="next_sid", select_by="loss")
    plain = train(SFTConfig(output_dir=str(tmp_path / "plain"), **common))
    kd = train(SFTConfig(output_dir=str(tmp_path / "kd"), cf_model=str(teacher), cf_distill=0.5, **common))
    loss = [h["loss"] for h in kd["log_history"] if "loss" in h]
    assert loss and all(math.isfinite(v) for v in loss)
    assert loss[0] != [h["loss"] for h in plain["log_history"] if "loss" in h][0]
