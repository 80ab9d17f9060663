#!/usr/bin/env bash
# QLoRA SFT: LoRA on a 4-bit NF4 base (bitsandbytes; runs on CPU too). Same settings as
# scripts/sft.sh with MODE=use_qlora, rank 16 / alpha 32 by default.
export MODE=use_qlora OUT="${OUT:-out/sft_qlora}" LORA_R="${LORA_R:-16}" LORA_ALPHA="${LORA_ALPHA:-32}"
exec bash "$(dirname "$0")/sft.sh" "$@"
