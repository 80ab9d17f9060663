"""Save -> load gives the same logits, through minirec's loader and through plain PEFT."""

import pytest
import torch

from minirec.modeling.adapters import wrap_model
from minirec.modeling.loading import load_trained, save_trained
from minirec.run_info import RunInfo, relative_to_run


@pytest.mark.parametrize("mode", ["lora", "freeze", "full"])
def test_save_load_same_logits(tmp_path, tiny_model, tiny_base, catalogue, mode):
    model, tok, ids = tiny_model
    model = wrap_model(model, mode, ids, lora_r=4)
    torch.manual_seed(0)
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    save_trained(model, tok, tmp_path)
    RunInfo("tiny", relative_to_run(tiny_base, tmp_path), mode, "compact", 10, ["next_sid"], "x",
            catalogue.index_sha256).write(tmp_path)

    batch = torch.tensor([[ids[3], ids[60], ids[400], 5, 6]])
    model.eval()
    expected = model(input_ids=batch).logits
    loaded, loaded_tok, run = load_trained(tmp_path)
    loaded.eval()
    assert run.mode == mode and len(loaded_tok) == len(tok)
    torch.testing.assert_close(loaded(input_ids=batch).logits, expected)

    if mode != "full":  # the adapter also loads with nothing but transformers + PEFT
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(tiny_base)
        base.resize_token_embeddings(len(loaded_tok))
        plain = PeftModel.from_pretrained(base, tmp_path).eval()
        torch.testing.assert_close(plain(input_ids=batch).logits, expected)


@pytest.mark.parametrize("mode", ["lora", "freeze"])
def test_merge_gives_a_full_run_with_the_same_logits(tmp_path, tiny_model, tiny_base, catalogue, mode):
    from minirec.merge import merge

    model, tok, ids = tiny_model
    model = wrap_model(model, mode, ids, lora_r=4)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    save_trained(model, tok, tmp_path / "lora")
    RunInfo("tiny", str(tiny_base), mode, "compact", 10, ["next_sid"], "x", catalogue.index_sha256).write(tmp_path / "lora")
    merge(str(tmp_path / "lora"), str(tmp_path / "merged"))
    merged, _, run = load_trained(tmp_path / "merged")
    assert run.mode == "full" and not hasattr(merged, "peft_config")
    batch = torch.tensor([[ids[3], ids[60], 5]])
    torch.testing.assert_close(merged.eval()(input_ids=batch).logits, model.eval()(input_ids=batch).logits,
                               atol=1e-4, rtol=1e-4)
