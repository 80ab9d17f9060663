#!/usr/bin/env bash
# LoRA SFT (+ trainable SID rows): scripts/sft.sh with MODE=use_lora. LoRA is meant for pretrained
# bases: on the random-init tiny default it trains, but learns much less than scripts/sft_full.sh.
# Every value can be overridden as in scripts/sft.sh (KEY=VALUE, NPROC=N, DEEPSPEED=..., extra --flags).
export MODE=use_lora OUT="${OUT:-out/sft_lora}"
exec bash "$(dirname "$0")/sft.sh" "$@"
