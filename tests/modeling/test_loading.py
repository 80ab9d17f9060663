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
