#!/usr/bin/env bash
# Full fine-tuning SFT: the natural mode for the random-init tiny default, and the main job.
source "$(dirname "$0")/_common.sh"
exec "$PYTHON" sft.py \
  --data_dir "${DATA:-data/Industrial_and_Scientific}" \
  --base_model "${BASE_MODEL:-tiny}" \
  --output_dir "${OUT:-out/sft_full}" \
  --tasks "${TASKS:-next_sid,title_to_sid,sid_to_title}" \
  --template "${TEMPLATE:-compact}" \
  --batch_size "${BATCH_SIZE:-128}" --micro_batch_size "${MICRO_BATCH_SIZE:-32}" \
  --learning_rate "${LR:-2e-3}" --num_epochs "${EPOCHS:-8}" \
  --cutoff_len "${CUTOFF_LEN:-256}" --seed "${SEED:-42}" \
  ${DEEPSPEED:+--deepspeed "$DEEPSPEED"} \
  "${EXTRA[@]}"
