#!/usr/bin/env bash
# QLoRA SFT: LoRA on a 4-bit NF4 base (bitsandbytes; runs on CPU too). Settings as in sft_lora.sh.
source "$(dirname "$0")/_common.sh"
exec "$PYTHON" sft.py \
  --data_dir "${DATA:-data/Industrial_and_Scientific}" \
  --base_model "${BASE_MODEL:-tiny}" \
  --output_dir "${OUT:-out/sft_qlora}" \
  --use_qlora True \
  --lora_r "${LORA_R:-16}" --lora_alpha "${LORA_ALPHA:-32}" --lora_dropout "${LORA_DROPOUT:-0.05}" \
  --lora_target_modules "${LORA_TARGET_MODULES:-all}" \
  --tasks "${TASKS:-next_sid,title_to_sid,sid_to_title}" \
  --template "${TEMPLATE:-compact}" \
  --batch_size "${BATCH_SIZE:-128}" --micro_batch_size "${MICRO_BATCH_SIZE:-32}" \
  --learning_rate "${LR:-1e-3}" --num_epochs "${EPOCHS:-3}" \
  --cutoff_len "${CUTOFF_LEN:-256}" --seed "${SEED:-42}" \
  ${DEEPSPEED:+--deepspeed "$DEEPSPEED"} \
  "${EXTRA[@]}"
