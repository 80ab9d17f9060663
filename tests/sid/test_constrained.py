import random

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirec.constrained import SIDConstraint, SIDTrie

EOS, PAD, VOCAB = 0, 1, 40


@st.composite
def catalogues(draw):
    """Random catalogues of mixed depth (1-4 levels) over token ids 2..VOCAB-1, with shared prefixes."""
    n = draw(st.integers(1, 30))
    seqs = set()
    for _ in range(n):
        depth = draw(st.integers(1, 4))
        seqs.add(tuple(draw(st.integers(2, 2 + 6 * (level + 1))) for level in range(depth)))
    return sorted(seqs)


def walk(trie, rng, max_steps=6):
    """Follow random allowed tokens until EOS; the trie must never leave us stuck."""
    gen = torch.zeros((1, 0), dtype=torch.long)
    for _ in range(max_steps):
        allowed = trie.allowed_mask(gen)[0].nonzero().flatten().tolist()
        assert allowed, "a live prefix must always allow something"
        tok = rng.choice(allowed)
        if tok == EOS:
            return tuple(gen[0].tolist())
        gen = torch.cat([gen, torch.tensor([[tok]])], dim=1)
    raise AssertionError("no EOS within max depth")


@settings(max_examples=60, deadline=None)
@given(catalogues(), st.integers(0, 10_000))
def test_every_walk_ends_in_the_catalogue_and_every_item_is_reachable(seqs, seed):
    trie = SIDTrie(seqs, EOS, VOCAB, PAD)
    rng = random.Random(seed)
    for _ in range(20):
        assert walk(trie, rng) in set(seqs)
    assert sorted(trie.sequences()) == sorted(seqs)


def test_states_after_eos_and_off_catalogue():
    trie = SIDTrie([(2, 3), (2, 4), (5,)], EOS, VOCAB, PAD)
    mask = trie.allowed_mask(torch.tensor([[2], [5], [7]]))
    assert mask[0].nonzero().flatten().tolist() == [3, 4]
    assert mask[1].nonzero().flatten().tolist() == [EOS]  # complete SID: only EOS
    assert not mask[2].any()  # off the catalogue: nothing, never a fallback
    done = trie.allowed_mask(torch.tensor([[5, EOS, PAD]]))
    assert done[0].nonzero().flatten().tolist() == [EOS]
    # EOS before a SID is complete is not a valid end either
    assert not trie.allowed_mask(torch.tensor([[2, EOS]])).any()


def test_prefix_that_is_also_an_item_allows_eos_and_children():
    trie = SIDTrie([(2, 3), (2, 3, 4)], EOS, VOCAB, PAD)
    assert trie.allowed_mask(torch.tensor([[2, 3]]))[0].nonzero().flatten().tolist() == [EOS, 4]


def test_logits_processor_masks_only_the_generated_part():
    trie = SIDTrie([(2, 3)], EOS, VOCAB, PAD)
    proc = SIDConstraint(trie, prompt_len=2)
    scores = proc(torch.tensor([[9, 9, 2]]), torch.zeros(1, VOCAB))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [3]


def test_greedy_generation_of_an_untrained_model_only_emits_catalogue_sids(tiny_model, catalogue, industrial):
    from minirec.decoding import greedy_next_sid

    model, tok, _ = tiny_model
    rows = industrial.split("valid")[:24]
    _, preds = greedy_next_sid(model, tok, catalogue, rows, batch_size=8)
    assert len(preds) == 24 and all(p in catalogue.items_by_sid for p in preds)
