"""The batched constrained beam search against HF generate, and its edge cases."""

import itertools
from unittest import mock

import pytest
import torch

from minirec import beam
from minirec.beam import constrained_beam_search, constrained_sample
from minirec.constrained import SIDTrie
from minirec.decoding import build_trie, decode_sid, model_vocab_size
from minirec.prompts import next_sid_prompt
from minirec.tokenization import encode_prompts


def hf_constrained_beams(model, tok, prompts, trie, k):
    """Reference: HF generate with prefix_allowed_tokens_fn over the same trie."""
    tok.padding_side = "left"
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    width = enc["input_ids"].shape[1]

    def allowed(_, ids):
        return trie.allowed_mask(ids[width:][None])[0].nonzero().flatten().tolist() or [tok.eos_token_id]

    out = model.generate(**enc, num_beams=k, num_return_sequences=k, do_sample=False, max_new_tokens=trie.max_depth + 1,
                         prefix_allowed_tokens_fn=allowed, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    seqs = [decode_sid(tok, s[width:]) for s in out]
    return [seqs[i : i + k] for i in range(0, len(seqs), k)]


def test_same_ranked_lists_as_hf_generate(tiny_model, catalogue, industrial):
    model, tok, _ = tiny_model
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a sharper distribution than the mean-initialised SID rows give
        model.get_input_embeddings().weight.normal_(0, 0.5)
    trie = build_trie(model, tok, catalogue)
    rows = industrial.split("test")[:6]
    prompts = encode_prompts(tok, [next_sid_prompt(r.history, catalogue) for r in rows])
    ours = constrained_beam_search(model, prompts, trie, 10, tok.pad_token_id)
    ref = hf_constrained_beams(model, tok, prompts, trie, 10)
    for mine, theirs in zip(ours, ref):
        assert [decode_sid(tok, b.tokens) for b in mine] == theirs
        assert all(decode_sid(tok, b.tokens) in catalogue.items_by_sid for b in mine)
        assert [b.score for b in mine] == sorted((b.score for b in mine), reverse=True)


@pytest.mark.parametrize("decoder", ["_SharedPrefixDecoder", "_ExpandedDecoder"])
def test_fewer_valid_sids_than_beams_are_dropped_not_padded(tiny_model, decoder):
    model, tok, ids = tiny_model
    seqs = [(ids[0], ids[100]), (ids[0], ids[101]), (ids[1], ids[100], ids[300])]
    trie = SIDTrie(seqs, tok.eos_token_id, model_vocab_size(model), tok.pad_token_id)
    prompts = encode_prompts(tok, ["Items: x\nNext:", "Items: a much longer prompt here\nNext:"])
    with mock.patch.object(beam, "_decoder_for", lambda m: getattr(beam, decoder)):
        beams = constrained_beam_search(model.eval(), prompts, trie, 8, tok.pad_token_id)
    for row in beams:
        assert sorted(b.tokens for b in row) == sorted(seqs)  # all 3, mixed depth, nothing else
        assert all(torch.isfinite(torch.tensor(b.score)) for b in row)


def test_batching_does_not_change_results(tiny_model, catalogue, industrial):
    model, tok, _ = tiny_model
    torch.manual_seed(1)
    with torch.no_grad():  # separate the near-identical fresh SID rows, so no two beams tie
        model.get_input_embeddings().weight.normal_(0, 0.5)
    trie = build_trie(model, tok, catalogue)
    rows = industrial.split("valid")[:5]
    prompts = encode_prompts(tok, [next_sid_prompt(r.history, catalogue) for r in rows])
    together = constrained_beam_search(model.eval(), prompts, trie, 5, tok.pad_token_id)
    alone = [constrained_beam_search(model, [p], trie, 5, tok.pad_token_id)[0] for p in prompts]
    for x, y in zip(together, alone):
        assert [b.tokens for b in x] == [b.tokens for b in y]
        torch.testing.assert_close(torch.tensor([b.score for b in x]), torch.tensor([b.score for b in y]),
                                   atol=1e-4, rtol=1e-4)


def small_catalogue(tok, ids):
    """36 depth-3 SIDs (4 x 3 x 3) and two depth-2 SIDs that are also prefixes of depth-3 ones."""
    names = tok.convert_ids_to_tokens(ids)
    level = {p: [i for i, n in zip(ids, names) if n.startswith(f"<{p}_")] for p in "abc"}
    deep = list(itertools.product(level["a"][:4], level["b"][:3], level["c"][:3]))
    return deep + [deep[0][:2], deep[-1][:2]]


def exhaustive_scores(model, prompt, sids, eos):
    """Summed log-probability of every SID + EOS after ``prompt``: one plain forward pass per
    SID, no cache, no trie; the reference the beam search must reproduce."""
    seqs = [list(prompt) + list(s) + [eos] for s in sids]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [eos] * (width - len(s)) for s in seqs])  # right padding: causal, unread
    logp = model(input_ids=ids).logits.float().log_softmax(-1)
    return [sum(float(logp[i, p, ids[i, p + 1]]) for p in range(len(prompt) - 1, len(prompt) + len(s)))
            for i, s in enumerate(sids)]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_full_width_beam_equals_exhaustive_scoring(tiny_model, catalogue, industrial, attention):
    model, tok, ids = tiny_model
    model.set_attn_implementation(attention)
    model.eval()
    torch.manual_seed(2)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.5)
    sids = small_catalogue(tok, ids)
    trie = SIDTrie(sids, tok.eos_token_id, model_vocab_size(model), tok.pad_token_id)
    rows = industrial.split("test")[:4]
    prompts = encode_prompts(tok, [next_sid_prompt(r.history, catalogue) for r in rows])
    K = len(sids)  # as wide as the catalogue: beam search prunes nothing, so it must be exact
    beams = constrained_beam_search(model, prompts, trie, K, tok.pad_token_id)
    with torch.no_grad():
        for prompt, row in zip(prompts, beams):
            scores = exhaustive_scores(model, prompt, sids, tok.eos_token_id)
            best = sorted(zip(scores, sids), reverse=True)
            assert [b.tokens for b in row] == [s for _, s in best]
            torch.testing.assert_close(torch.tensor([b.score for b in row]), torch.tensor([s for s, _ in best]),
                                       atol=1e-4, rtol=0)


@pytest.mark.parametrize("wrap", ["plain", "lora"])
def test_shared_prefix_decoder_matches_expanded_cache(tiny_model, catalogue, industrial, wrap):
    """The decoder that attends to one prompt cache per row gives the old decoder's results."""
    model, tok, _ = tiny_model
    torch.manual_seed(3)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.5)
    if wrap == "lora":  # a PEFT-wrapped policy, as RL rolls out; non-zero B so the adapter counts
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.eval()
    trie = build_trie(model, tok, catalogue)
    rows = industrial.split("test")[10:16]
    prompts = encode_prompts(tok, [next_sid_prompt(r.history, catalogue) for r in rows])
    assert beam._decoder_for(model) is beam._SharedPrefixDecoder
    new = constrained_beam_search(model, prompts, trie, 12, tok.pad_token_id)
    with mock.patch.object(beam, "_decoder_for", lambda m: beam._ExpandedDecoder):
        old = constrained_beam_search(model, prompts, trie, 12, tok.pad_token_id)
    for x, y in zip(new, old):
        assert [b.tokens for b in x] == [b.tokens for b in y]
        torch.testing.assert_close(torch.tensor([b.score for b in x]), torch.tensor([b.score for b in y]),
                                   atol=1e-4, rtol=0)


def test_max_rows_chunks_give_the_unchunked_results(tiny_model, catalogue, industrial):
    model, tok, _ = tiny_model
    torch.manual_seed(4)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.5)
    trie = build_trie(model, tok, catalogue)
    rows = industrial.split("valid")[:7]
    prompts = encode_prompts(tok, [next_sid_prompt(r.history, catalogue) for r in rows])
    whole = constrained_beam_search(model.eval(), prompts, trie, 6, tok.pad_token_id)
    calls = []
    real = beam._beam_search
    with mock.patch.object(beam, "_beam_search", lambda m, p, *a: calls.append(len(p)) or real(m, p, *a)):
        chunked = constrained_beam_search(model, prompts, trie, 6, tok.pad_token_id, max_rows=13)
    assert calls == [2, 2, 2, 1]  # 13 rows hold two prompts of 6 beams
    for x, y in zip(whole, chunked):
        assert [b.tokens for b in x] == [b.tokens for b in y]
        torch.testing.assert_close(torch.tensor([b.score for b in x]), torch.tensor([b.score for b in y]),
                                   atol=1e-4, rtol=0)


def test_default_max_rows_bounds_the_vocab_sized_tensors():
    qwen = beam.default_max_rows(151_936, 16)
    assert qwen * 151_936 * 4 <= beam.ROW_TENSOR_BYTES and qwen >= 16
    assert beam.default_max_rows(10**9, 50) == 50  # never less than one prompt's beams


def test_samples_score_their_sid_exactly(tiny_model, catalogue, industrial):
    """Each sample (at temperature 1, chunked or not) is a catalogue SID scored with its exact log-probability."""
    model, tok, ids = tiny_model
    model.eval()
    sids = small_catalogue(tok, ids)
    trie = SIDTrie(sids, tok.eos_token_id, model_vocab_size(model), tok.pad_token_id)
    prompts = encode_prompts(tok, [next_sid_prompt(r.history, catalogue) for r in industrial.split("test")[:3]])
    gen = torch.Generator().manual_seed(0)
    samples = constrained_sample(model, prompts, trie, 5, tok.pad_token_id, generator=gen, max_rows=10)
    with torch.no_grad():
        for prompt, row in zip(prompts, samples):
            assert len(row) == 5
            scores = dict(zip(sids, exhaustive_scores(model, prompt, sids, tok.eos_token_id)))
            for b in row:
                assert abs(b.score - scores[b.tokens]) < 1e-4
