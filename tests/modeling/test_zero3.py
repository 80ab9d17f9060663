"""ZeRO-3 on a pretrained base that gains SID tokens (configs/README.md's ZeRO-3 command).

Under ZeRO-3 the Trainer's arguments exist before the model loads, so from_pretrained partitions
the weights as it loads them (deepspeed.zero.Init): a process's parameter is an empty tensor of
shape [0]. Reading the vocabulary size from it, or writing the new SID rows into it, must gather
it first, as transformers' own resize does. These runs are sft.py itself, one process on the CPU
(DeepSpeed's CPU accelerator, gloo) with the shipped zero3.json: partitioned exactly as on GPUs,
though over one process. The base is a tiny Qwen2 padded past its tokenizer like Qwen2.5, with
more padding rows than the dataset has SID tokens, so a shrunk vocabulary shows.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.test_gpu_path import PADDING, _padded_qwen

pytestmark = pytest.mark.slow

INDEX = {"1": ["<a_1>", "<b_1>", "<c_1>"], "2": ["<a_1>", "<b_2>", "<c_1>"], "3": ["<a_2>", "<b_1>", "<c_1>"]}
ROWS = ["u1\t1\t2", "u1\t1 2\t3", "u2\t3\t1", "u2\t3 1\t2", "u3\t2\t3", "u3\t2 3\t1"]


def _dataset(root):
    root.mkdir()
    (root / "index.json").write_text(json.dumps(INDEX))
    (root / "item.json").write_text(json.dumps({k: {"title": f"item {k}", "description": ""} for k in INDEX}))
    inter = "user_id:token\titem_id_list:token_seq\titem_id:token\n" + "\n".join(ROWS) + "\n"
    for split in ("train", "valid", "test"):
        (root / f"{split}.inter").write_text(inter)
    return root


@pytest.mark.parametrize("sid_init, tied", [("auto", True), ("text", False)], ids=["mean-rows-tied", "text-untied"])
def test_zero3_sft_keeps_the_padded_vocabulary_and_sets_the_sid_rows(tmp_path, sid_init, tied):
    from transformers import AutoModelForCausalLM

    from minirec.data import load_dataset
    from minirec.modeling.loading import load_trained
    from minirec.modeling.text_init import text_rows
    from minirec.sid.text import save_item_embeddings

    base, n_tokens = _padded_qwen(tmp_path / "qwen", tied=tied)
    data = _dataset(tmp_path / "data")
    catalogue = load_dataset(data, splits=()).catalogue
    tokens = catalogue.sid_tokens()
    assert len(tokens) < PADDING  # the SID tokens fit in the padding: the vocabulary must not change size
    embeddings = np.random.default_rng(0).standard_normal((len(INDEX), 8))
    save_item_embeddings(data / "emb.npy", embeddings, list(catalogue.sids))
    out = tmp_path / "run"
    flags = ["--base_model", str(base), "--data_dir", str(data), "--output_dir", str(out), "--tasks", "next_sid",
             "--max_steps", "1", "--batch_size", "2", "--micro_batch_size", "2", "--learning_rate", "1e-9",
             "--select_by", "loss", "--greedy_eval_rows", "0", "--report_to", "none", "--sid_init", sid_init,
             "--deepspeed", str(ROOT / "configs" / "deepspeed" / "zero3.json")]
    if sid_init == "text":
        flags += ["--item_embeddings", str(data / "emb.npy")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "sft.py"), *flags], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((out / "metrics.json").read_text())["engine"] == "DeepSpeedEngine"

    start = AutoModelForCausalLM.from_pretrained(base)
    model, tok, _ = load_trained(out)
    ids = tok.convert_tokens_to_ids(tokens)
    matrices = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
    starts = [start.get_input_embeddings().weight, start.get_output_embeddings().weight]
    for w, w0 in zip(matrices, starts):
        assert w.shape == (n_tokens + PADDING, 32)  # the padded vocabulary, never shrunk to the tokenizer's
        if sid_init == "text":
            want = text_rows(catalogue, dict(zip(catalogue.sids, embeddings)), tokens, 32,
                             start.config.initializer_range, seed=42)
        else:
            want = w0[:n_tokens].mean(0).expand(len(ids), -1)
        torch.testing.assert_close(w[ids].detach(), want, atol=1e-4, rtol=0)
        rest = sorted(set(range(n_tokens, n_tokens + PADDING)) - set(ids))
        torch.testing.assert_close(w[rest].detach(), w0[rest], atol=1e-6, rtol=0)  # padding no SID took: as it was
