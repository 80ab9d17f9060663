"""The batched constrained beam search against HF generate, and its edge cases."""

import torch

from minirec.beam import constrained_beam_search
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


def test_fewer_valid_sids_than_beams_are_dropped_not_padded(tiny_model):
    model, tok, ids = tiny_model
    seqs = [(ids[0], ids[100]), (ids[0], ids[101]), (ids[1], ids[100], ids[300])]
    trie = SIDTrie(seqs, tok.eos_token_id, model_vocab_size(model), tok.pad_token_id)
    prompts = encode_prompts(tok, ["Items: x\nNext:", "Items: a much longer prompt here\nNext:"])
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
