"""Merge a run's adapter into its base: a plain full checkpoint, no PEFT needed to load it.

    python -m minirec.merge --model_path out/sft_lora --output_dir out/sft_merged

QLoRA adapters are merged into the base loaded in full precision (merging into 4-bit
weights would round the update away). The merged dir is itself a run (``mode: full``), so
RL and evaluation take it as ``--model_path`` like any other.
"""

import shutil
from dataclasses import replace
from pathlib import Path

from minirec.cli import run_cli
from minirec.errors import MinirecError
from minirec.modeling.loading import load_trained, save_trained
from minirec.run_info import RunInfo


def merge(model_path: str, output_dir: str, trust_remote_code: bool = False) -> Path:
    run = RunInfo.read(model_path)
    if not run.is_adapter:
        raise MinirecError(f"{model_path}: a {run.mode} run has no adapter to merge; use it as it is")
    out = Path(output_dir)
    if out.exists():
        raise MinirecError(f"{out} already exists; pass a new --output_dir")
    model, tokenizer, _ = load_trained(model_path, quantization=None, trust_remote_code=trust_remote_code)
    merged = model.merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    save_trained(merged, tokenizer, tmp)
    replace(run, mode="full", base_model_path=".", quantization=None,
            config={**run.config, "merged_from": str(model_path)}).write(tmp)
    tmp.rename(out)  # the merged dir appears only when complete
    print(f"merged {model_path} ({run.mode}) -> {out}")
    return out


if __name__ == "__main__":
    run_cli(merge)
