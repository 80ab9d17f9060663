import torch

from minirec.modeling.tiny import add_hidden_dropout


def _logits(model, ids):
    return model(input_ids=ids).logits


def test_hidden_dropout_acts_in_training_only(tiny_model):
    model, _, sid_ids = tiny_model
    ids = torch.tensor([sid_ids[:12]])
    model.eval()
    with torch.no_grad():
        before = _logits(model, ids)
    handles = add_hidden_dropout(model, 0.5)
    assert len(handles) == 1 + 2 * len(model.model.layers)  # embeddings, then attention and MLP per layer
    with torch.no_grad():
        torch.testing.assert_close(_logits(model, ids), before)  # eval: no dropout
        model.train()
        torch.manual_seed(0)
        first = _logits(model, ids)
        torch.manual_seed(1)
        second = _logits(model, ids)
    assert not torch.allclose(first, second) and not torch.allclose(first, before)
    for h in handles:
        h.remove()
    model.eval()
