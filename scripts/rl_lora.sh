#!/usr/bin/env bash
# GRPO continuing an SFT LoRA adapter (out/sft_lora): scripts/rl.sh with PEFT=use_lora.
# Every value can be overridden as in scripts/rl.sh (KEY=VALUE, NPROC=N, DEEPSPEED=..., extra --flags).
export PEFT=use_lora MODEL="${MODEL:-out/sft_lora}" OUT="${OUT:-out/rl_lora}"
exec bash "$(dirname "$0")/rl.sh" "$@"
