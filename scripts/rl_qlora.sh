#!/usr/bin/env bash
# GRPO with the base loaded in 4-bit NF4 and the SFT adapter continued on top (QLoRA).
# Same settings as scripts/rl.sh.
export PEFT=use_qlora MODEL="${MODEL:-out/sft_qlora}" OUT="${OUT:-out/rl_qlora}"
exec bash "$(dirname "$0")/rl.sh" "$@"
