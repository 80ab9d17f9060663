"""The lean LoRA and trainable-SID-row forwards train exactly as PEFT's own, and keep less."""

import copy

import pytest
import torch
import torch.nn.functional as F

from minirec.modeling.adapters import wrap_model
from minirec.modeling.lean import LeanLoraLinear, LeanTrainableTokensLayer
from minirec.modeling.loading import add_sid_tokens, load_base


def test_lora_a_is_dropout_then_linear_bit_for_bit():
    from minirec.modeling.lean import _LoraA

    gen = torch.Generator().manual_seed(0)
    x0, w0 = torch.randn(3, 7, 16, generator=gen), torch.randn(4, 16, generator=gen)
    grad = torch.randn(3, 7, 4, generator=gen)
    results = []
    for lean in (False, True):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        torch.manual_seed(3)
        out = _LoraA.apply(x, w, 0.3) if lean else F.linear(F.dropout(x, 0.3), w)
        torch.rand(5)  # the global generator moves on before backward
        out.backward(grad)
        results.append((out, x.grad, w.grad, torch.rand(3)))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def _untie(model):
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    return model


def _base(tiny_base, catalogue, tied=True, quantization=None):
    model, tok = load_base(tiny_base, quantization=quantization)
    if not tied:
        _untie(model)
    ids = add_sid_tokens(model, tok, catalogue.sid_tokens())
    return model, ids


def _pair(tiny_base, catalogue, mode, tied=True, quantization=None, **kwargs):
    """The same base wrapped twice: PEFT's forwards and the lean ones, with moved-off-zero
    adapters (LoRA B and the SID rows start where their gradients would hide differences)."""
    models = []
    for lean in (False, True):
        torch.manual_seed(0)  # the new SID rows and LoRA A are drawn at random
        model, ids = _base(tiny_base, catalogue, tied, quantization)
        model = wrap_model(model, mode, ids, lora_r=4, lean=lean, **kwargs)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in sorted(model.named_parameters()):
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p.dtype))
        models.append(model)
    return models, ids


def _batch(ids, vocab=600):
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, vocab, (3, 12), generator=gen)
    x[:, 4:10] = torch.tensor(ids)[torch.randint(0, len(ids), (3, 6), generator=gen)]  # SID tokens in and out
    labels = x.clone()
    labels[:, :4] = -100
    return x, labels


def _train_steps(model, x, labels, steps=2):
    """Losses and gradients of ``steps`` AdamW steps, dropout drawn from the same seed."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(123)
    losses, grads = [], []
    for _ in range(steps):
        loss = model(input_ids=x, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        opt.step()
        opt.zero_grad(set_to_none=True)
    return losses, grads


def _assert_same_training(peft_model, lean_model, ids, rtol=1e-5, atol=1e-6):
    x, labels = _batch(ids)
    losses_a, grads_a = _train_steps(peft_model, x, labels)
    losses_b, grads_b = _train_steps(lean_model, x, labels)
    assert losses_a == pytest.approx(losses_b, rel=rtol, abs=atol)
    for ga, gb in zip(grads_a, grads_b):
        assert ga.keys() == gb.keys() and ga
        for name in ga:
            assert ga[name].abs().sum() > 0, name
            torch.testing.assert_close(gb[name], ga[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("tied,dropout", [(True, 0.1), (False, 0.1), (True, 0.0)])
def test_lean_lora_trains_as_peft(tiny_base, catalogue, tied, dropout):
    (peft_model, lean_model), ids = _pair(tiny_base, catalogue, "lora", tied=tied, lora_dropout=dropout)
    assert sum(isinstance(m, LeanLoraLinear) for m in lean_model.modules()) == 2 * 7  # every adapted Linear
    assert sum(isinstance(m, LeanTrainableTokensLayer) for m in lean_model.modules()) == 2  # embedding + LM head
    assert not any(isinstance(m, (LeanLoraLinear, LeanTrainableTokensLayer)) for m in peft_model.modules())
    _assert_same_training(peft_model, lean_model, ids)


def test_lean_freeze_trains_as_peft(tiny_base, catalogue):
    (peft_model, lean_model), ids = _pair(tiny_base, catalogue, "freeze")
    _assert_same_training(peft_model, lean_model, ids)


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_lean_qlora_trains_as_peft(tiny_base, catalogue, dropout):
    (peft_model, lean_model), ids = _pair(tiny_base, catalogue, "qlora", quantization="4bit", lora_dropout=dropout)
    from minirec.modeling.lean import LeanLoraLinear4bit

    assert sum(isinstance(m, LeanLoraLinear4bit) for m in lean_model.modules()) == 2 * 7
    _assert_same_training(peft_model, lean_model, ids)


def test_lean_lora_with_gradient_checkpointing_trains_as_peft(tiny_base, catalogue):
    (peft_model, lean_model), ids = _pair(tiny_base, catalogue, "lora", lora_dropout=0.1)
    for model in (peft_model, lean_model):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _assert_same_training(peft_model, lean_model, ids)


def _kept_for_backward(model, x, labels, keeps_tensors=False) -> tuple[dict, set]:
    """Bytes per dtype, and sizes, of the tensors autograd keeps from one forward (not parameters),
    read with a saved-tensor hook; ``keeps_tensors`` marks it as one that returns the tensor itself,
    with which the lean layers may read a saved tensor twice."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = (t.dtype, t.untyped_storage().nbytes(), tuple(t.shape))
        return t

    pack.keeps_tensors = keeps_tensors
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=x, labels=labels)
    del out
    per_dtype = {}
    for dtype, nbytes, _ in kept.values():
        per_dtype[dtype] = per_dtype.get(dtype, 0) + nbytes
    return per_dtype, {nbytes // dtype.itemsize for dtype, nbytes, _ in kept.values()}


def test_lean_layers_keep_less_for_backward(tiny_base, catalogue):
    """PEFT keeps the merged vocabulary x hidden matrix and, per adapted Linear, a float dropout
    mask and a dropped copy of the input; the lean layers keep neither: with dropout, nothing more
    than without."""
    (peft_model, lean_model), ids = _pair(tiny_base, catalogue, "lora", lora_dropout=0.1)
    lean_no_dropout = _pair(tiny_base, catalogue, "lora", lora_dropout=0.0)[0][1]
    x, labels = _batch(ids)
    matrix = lean_model.get_input_embeddings().weight.numel()
    peft_kept, peft_sizes = _kept_for_backward(peft_model, x, labels)
    lean_kept, lean_sizes = _kept_for_backward(lean_model, x, labels)
    plain_kept, _ = _kept_for_backward(lean_no_dropout, x, labels)
    assert matrix in peft_sizes and matrix not in lean_sizes
    assert lean_kept == plain_kept
    assert peft_kept[torch.float32] > lean_kept[torch.float32] + 2 * 3 * 2 * x.numel() * 64 * 4
    # Without hooks that allow reading a saved tensor once only, the down projection's input (the
    # MLP's act(gate) * up, whose factors autograd keeps) is not kept a second time.
    config = lean_model.get_base_model().config
    down_inputs = config.num_hidden_layers * x.numel() * config.intermediate_size * 4
    for model in (lean_model, lean_no_dropout):
        kept, _ = _kept_for_backward(model, x, labels, keeps_tensors=True)
        assert kept[torch.float32] == lean_kept[torch.float32] - down_inputs


def test_lean_adapter_saves_as_peft_and_loads_with_plain_peft(tiny_base, catalogue, tmp_path):
    from peft import PeftModel

    (_, lean_model), ids = _pair(tiny_base, catalogue, "lora", lora_dropout=0.1)
    x, labels = _batch(ids)
    _train_steps(lean_model, x, labels, steps=1)
    peft_keys = set(_pair(tiny_base, catalogue, "lora", lora_dropout=0.1)[0][0].state_dict())
    assert set(lean_model.state_dict()) == peft_keys
    lean_model.save_pretrained(tmp_path, save_embedding_layers=False)
    base, _ = _base(tiny_base, catalogue)
    loaded = PeftModel.from_pretrained(base, tmp_path)
    assert not any(isinstance(m, (LeanLoraLinear, LeanTrainableTokensLayer)) for m in loaded.modules())
    lean_model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, lean_model(input_ids=x).logits, rtol=1e-5, atol=1e-5)


def test_lean_layers_survive_deepcopy(tiny_base, catalogue):
    (_, lean_model), ids = _pair(tiny_base, catalogue, "lora", lora_dropout=0.1)
    twin = copy.deepcopy(lean_model)
    x, labels = _batch(ids)
    lean_model.eval()
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(input_ids=x).logits, lean_model(input_ids=x).logits)
