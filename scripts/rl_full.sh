#!/usr/bin/env bash
# GRPO on a full fine-tuned SFT run (the tiny default's main job), training all weights.
# Same settings as scripts/rl.sh; a smaller default learning rate.
export PEFT=none MODEL="${MODEL:-out/sft_full}" OUT="${OUT:-out/rl_full}" LR="${LR:-2e-5}"
exec bash "$(dirname "$0")/rl.sh" "$@"
