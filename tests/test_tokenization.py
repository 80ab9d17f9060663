import pytest

from minirec.prompts import Example
from minirec.tokenization import IGNORE_INDEX, CompletionCollator, encode_examples, encode_prompts


def test_loss_only_on_completion_and_eos(tiny_model):
    _, tok, _ = tiny_model
    ex = Example("next_sid", "Items: <a_165><b_107><c_44>\nNext:", "<a_104><b_118><c_176>", "x")
    enc = encode_examples(tok, [ex], cutoff_len=64)
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    prompt = encode_prompts(tok, [ex.prompt])[0]
    assert ids[: len(prompt)] == prompt  # the prompt tokens are the ones used at generation time
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert tok.convert_ids_to_tokens(labels[len(prompt):]) == ["<a_104>", "<b_118>", "<c_176>", tok.eos_token]


def test_truncation_drops_oldest_prompt_tokens_and_keeps_completion(tiny_model):
    _, tok, _ = tiny_model
    ex = Example("next_sid", "Items: " + "<a_165><b_107><c_44>" * 20 + "\nNext:", "<a_104><b_118><c_176>", "x")
    enc = encode_examples(tok, [ex], cutoff_len=20)
    assert len(enc["input_ids"][0]) == 20
    assert tok.convert_ids_to_tokens(enc["input_ids"][0][-4:]) == ["<a_104>", "<b_118>", "<c_176>", tok.eos_token]
    full = encode_prompts(tok, [ex.prompt])[0]
    assert enc["input_ids"][0][:16] == full[-16:]


def test_collator_pads_without_loss():
    batch = CompletionCollator(pad_token_id=0, pad_to_multiple_of=4)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    )
    assert batch["input_ids"].shape == (2, 4)
    assert batch["labels"][1].tolist() == [5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_a_dense_row_holds_exactly_the_tokens_of_its_interaction_rows(tiny_model, catalogue):
    """Training on a dense row must see what the window rows see: each target's prompt, as
    evaluation encodes it, followed by the target SID and EOS."""
    from minirec.prompts import build_sequence_examples, next_sid_prompt
    from minirec.tokenization import encode_sequence_examples

    _, tok, _ = tiny_model
    items = tuple(list(catalogue.sids)[:5])
    dense = encode_sequence_examples(tok, build_sequence_examples([(items, 1)], catalogue, max_history=10))
    ids, labels = dense["input_ids"][0], dense["labels"][0]
    for t in range(1, len(items)):
        prompt = encode_prompts(tok, [next_sid_prompt(items[:t], catalogue, template="sids")])[0]
        completion = tok(catalogue.sid(items[t]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ids[: len(prompt) + len(completion)] == prompt + completion
        assert labels[len(prompt): len(prompt) + len(completion)] == completion
    assert labels[: len(ids) - 4 * (len(items) - 1)] == [IGNORE_INDEX] * 4  # the first item is context only


@pytest.mark.parametrize("length, max_history", [(25, 10), (12, 4)])
def test_a_user_longer_than_max_history_keeps_every_target_once_with_its_window(tiny_model, catalogue, length,
                                                                                   max_history):
    """A user with more items than --max_history spreads over several dense rows. Guards: every
    target is trained exactly once, the first target of each row sees exactly the window an
    interaction row (and evaluation) shows, and every later one sees at least that window."""
    from minirec.prompts import build_sequence_examples, next_sid_prompt
    from minirec.tokenization import encode_sequence_examples

    _, tok, _ = tiny_model
    items = tuple(list(catalogue.sids)[:length])
    examples = build_sequence_examples([(items, 1)], catalogue, max_history=max_history)
    dense = encode_sequence_examples(tok, examples)
    assert len(examples) == -(-(length - 1) // max_history)
    trained, t = [], 1
    for ids, labels in zip(dense["input_ids"], dense["labels"]):
        first = True
        end = labels.index(next(x for x in labels if x != IGNORE_INDEX))  # where the row's first target starts
        while end < len(ids):
            prompt = encode_prompts(tok, [next_sid_prompt(items[:t], catalogue, template="sids",
                                                          max_history=max_history)])[0]
            completion = tok(catalogue.sid(items[t]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            context = ids[:end]
            assert context == prompt if first else context[-len(prompt):] == prompt, (t, first)
            assert ids[end:end + len(completion)] == labels[end:end + len(completion)] == completion, t
            trained.append(t)
            first, end, t = False, end + len(completion), t + 1
    assert trained == list(range(1, length))
