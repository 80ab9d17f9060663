"""Label smoothing under gradient accumulation (transformers issue 46731, fixed by PR 47261).

Before the fix the Trainer's LabelSmoother averaged each micro-batch over its own tokens, while
the Trainer, seeing a model that takes ``num_items_in_batch``, skipped its division by the
accumulation steps: micro 8 x accumulation 2 then stepped with about twice the gradient of
micro 16 x accumulation 1. The pinned transformers (requirements.txt) has the fix; these tests
pin it through minirec's own SFT trainer. Adam's first step hardly depends on the gradient's
scale, so the step's loss and gradient norm (before clipping) are compared, not the weights.
"""

import pytest

from minirec.sft import SFTConfig
from minirec.sft.train import train
from tests.conftest import INDUSTRIAL

pytestmark = pytest.mark.slow

# group_by_length off: its mega-batches depend on the micro-batch size, so both layouts draw the
# same 16 rows only from the plain seeded sampler.
ONE_STEP = dict(data_dir=str(INDUSTRIAL), tiny_hidden_size=64, tiny_num_layers=2, max_train_rows=64,
                max_valid_rows=4, batch_size=16, max_steps=1, label_smoothing=0.1, group_by_length=False,
                select_by="loss", greedy_eval_rows=0, tasks="next_sid", report_to="none")


def first_step(tmp_path, micro_batch_size) -> dict:
    """The logged loss and gradient norm of one optimizer step over the same 16 rows."""
    metrics = train(SFTConfig(output_dir=str(tmp_path / f"micro{micro_batch_size}"),
                              micro_batch_size=micro_batch_size, **ONE_STEP))
    return next(h for h in metrics["log_history"] if "grad_norm" in h)


def test_smoothed_loss_is_the_same_with_and_without_accumulation(tmp_path):
    whole, accumulated = first_step(tmp_path, 16), first_step(tmp_path, 8)  # 16 x 1 and 8 x 2
    assert accumulated["loss"] == pytest.approx(whole["loss"], rel=1e-4), (accumulated, whole)
    assert accumulated["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4), (accumulated, whole)


def test_the_comparison_sees_a_label_smoother_without_the_fix(tmp_path, monkeypatch):
    """The smoother as it was before PR 47261 (per micro-batch mean) must fail the test above."""
    from transformers.trainer_pt_utils import LabelSmoother

    fixed = LabelSmoother.__call__

    def per_micro_batch(self, model_output, labels, shift_labels=False, num_items_in_batch=None):
        return fixed(self, model_output, labels, shift_labels)  # the micro-batch's own token count

    whole = first_step(tmp_path, 16)
    monkeypatch.setattr(LabelSmoother, "__call__", per_micro_batch)
    accumulated = first_step(tmp_path, 8)
    assert accumulated["grad_norm"] == pytest.approx(2 * whole["grad_norm"], rel=0.1), (accumulated, whole)
