"""Merge a run's adapter into its base: a plain full checkpoint, no PEFT needed to load it.

    python -m minirec.merge --model_path out/sft_lora --output_dir out/sft_merged

QLoRA adapters are merged into the base loaded in full precision (merging into 4-bit
weights would round the update away). The merged dir is itself a run (``mode: full``), so
RL and evaluation take it as ``--model_path`` like any other.
"""

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from minirec.config import Config
from minirec.errors import MinirecError
from minirec.run_info import RunInfo


@dataclass
class MergeConfig(Config):
    model_path: str
    """A finished adapter run (LoRA, QLoRA or freeze; it holds run.json)."""
    output_dir: str
    """A new dir for the merged full checkpoint; it appears only once complete."""
    trust_remote_code: bool = False
    """Allow the checkpoint's own modelling code to run."""

    def output(self):
        return "--output_dir", self.output_dir

    def check_paths(self) -> None:
        if Path(self.output_dir).exists():
            raise MinirecError(f"{self.output_dir} already exists; pass a new --output_dir")


def merge(model_path, output_dir, **options) -> Path:
    """``main`` for Python callers: arguments are the flags of :class:`MergeConfig`."""
    return main(MergeConfig.checked(model_path=model_path, output_dir=output_dir, **options))


def main(config: MergeConfig) -> Path:
    """Merge a run's adapter into its base: a full checkpoint that is itself a run (mode full)."""
    model_path, out = config.model_path, Path(config.output_dir)
    run = RunInfo.read(model_path)
    if not run.is_adapter:
        raise MinirecError(f"{model_path}: a {run.mode} run has no adapter to merge; use it as it is")
    from minirec.modeling.loading import load_trained, save_trained  # after the checks: it imports torch

    model, tokenizer, _ = load_trained(model_path, quantization=None, trust_remote_code=config.trust_remote_code)
    merged = model.merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_trained(merged, tokenizer, tmp)
        replace(run, mode="full", base_model_path=".", quantization=None,
                config={**run.config, "merged_from": str(model_path)}).write(tmp, run.catalogue_dir(model_path))
        tmp.rename(out)  # the merged dir appears only when complete
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"merged {model_path} ({run.mode}) -> {out}")
    return out


if __name__ == "__main__":
    from minirec.cli import Command, run

    run(Command("-m minirec.merge", MergeConfig, main))
