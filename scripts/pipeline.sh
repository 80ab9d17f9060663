#!/usr/bin/env bash
# The main job on a fresh clone: set up .venv, then SFT (full fine-tuning of the tiny default)
# on the bundled Industrial_and_Scientific data, GRPO on top (a LoRA adapter over the SFT
# weights, so the KL reference is the SFT model), and a test-split evaluation of both.
# About 35 minutes on 2 CPU cores. Results: out/sft_full, out/rl_lora_on_full, */eval_test/.
source "$(dirname "$0")/_common.sh"
bash scripts/setup.sh
export PYTHON=.venv/bin/python
SFT="${SFT_OUT:-out/sft_full}" RL="${RL_OUT:-out/rl_lora_on_full}"
[[ -f "$SFT/run.json" ]] || bash scripts/sft_full.sh OUT="$SFT" "$@"
[[ -f "$RL/run.json" ]] || PEFT=use_lora LR="${RL_LR:-1e-4}" bash scripts/rl_lora.sh MODEL="$SFT" OUT="$RL"
for run in "$SFT" "$RL"; do
  [[ -f "$run/eval_test/metrics.json" ]] || bash scripts/evaluate.sh MODEL="$run"
done
