#!/usr/bin/env bash
# Full fine-tuning SFT: the natural mode for the random-init tiny default, and the main job.
# Same settings as scripts/sft_lora.sh (LoRA flags unused), 8 epochs at lr 2e-3 by default.
export MODE=full OUT="${OUT:-out/sft_full}" LR="${LR:-2e-3}" EPOCHS="${EPOCHS:-8}"
exec bash "$(dirname "$0")/sft_lora.sh" "$@"
