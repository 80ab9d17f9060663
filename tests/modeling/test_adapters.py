import pytest
import torch

from minirec.errors import MinirecError
from minirec.modeling.adapters import count_parameters, linear_module_names, resolve_target_modules, trainable_line, wrap_model
from minirec.modeling.loading import add_sid_tokens, load_base


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_target_modules_are_detected_from_the_model(tiny_model):
    model, _, _ = tiny_model
    found = linear_module_names(model)
    assert found == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert "lm_head" not in found
    assert resolve_target_modules(model, "qkv") == ["k_proj", "q_proj", "v_proj"]
    assert resolve_target_modules(model, "q_proj, v_proj") == ["q_proj", "v_proj"]
    with pytest.raises(MinirecError, match="no Linear layer named wq"):
        resolve_target_modules(model, "q_proj,wq")


def test_sid_tokens_are_single_ordinary_tokens(tiny_model, catalogue):
    model, tok, ids = tiny_model
    assert len(ids) == 560 and model.get_input_embeddings().weight.shape[0] == len(tok)
    assert tok.convert_ids_to_tokens(tok.encode("x<a_165><b_107><c_44>\n", add_special_tokens=False))[1:4] == ["<a_165>", "<b_107>", "<c_44>"]
    assert not any(t in tok.all_special_tokens for t in catalogue.sid_tokens())


def test_full_mode_trains_everything(tiny_model):
    model, _, ids = tiny_model
    model = wrap_model(model, "full", ids)
    trainable, total = count_parameters(model)
    assert trainable == total


def test_lora_trains_adapters_and_sid_rows_only(tiny_model):
    model, _, ids = tiny_model
    model = wrap_model(model, "lora", ids, lora_r=4, lora_target_modules="qkv")
    names = trainable_names(model)
    assert names and all("lora_" in n or "trainable_tokens_delta" in n for n in names)
    assert any("q_proj.lora_A" in n for n in names) and not any("o_proj" in n for n in names)
    delta = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n][0]
    assert delta.shape[0] == len(ids)  # only the new SID rows, not the whole embedding
    line = trainable_line(model)
    assert line.startswith("trainable params: ") and " || all params: " in line and "|| trainable%: " in line


def test_freeze_trains_only_sid_rows(tiny_model):
    model, _, ids = tiny_model
    model = wrap_model(model, "freeze", ids)
    names = trainable_names(model)
    assert names and all("trainable_tokens_delta" in n for n in names)
    trainable, _ = count_parameters(model)
    assert trainable == len(ids) * model.get_input_embeddings().weight.shape[1]


def test_qlora_base_is_4bit_and_frozen(tiny_base, catalogue):
    model, tok = load_base(tiny_base, quantization="4bit")
    ids = add_sid_tokens(model, tok, catalogue.sid_tokens())
    model = wrap_model(model, "qlora", ids, lora_r=4)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert type(layer.base_layer).__name__ == "Linear4bit"
    assert not any(p.requires_grad for n, p in model.named_parameters() if "base_layer" in n)
    out = model(input_ids=torch.tensor([[ids[0], ids[100]]]), labels=torch.tensor([[ids[0], ids[100]]]))
    out.loss.backward()
    assert layer.lora_A["default"].weight.grad is not None


def test_4bit_layers_stay_trainable_after_an_inference_pass(tiny_base, catalogue):
    """bitsandbytes repacks 4-bit weights for CPU inference on an eval pass; training must still work after."""
    from minirec.modeling.loading import keep_4bit_trainable

    model, tok = load_base(tiny_base, quantization="4bit")
    keep_4bit_trainable(model)
    ids = add_sid_tokens(model, tok, catalogue.sid_tokens())
    model = wrap_model(model, "qlora", ids, lora_r=4)
    x = torch.tensor([[ids[0], ids[100], 5, 6]])
    model.eval()
    with torch.no_grad():
        model(input_ids=x)  # an evaluation pass or an RL rollout
    model.train()
    model(input_ids=x, labels=x).loss.backward()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_A["default"].weight.grad is not None
