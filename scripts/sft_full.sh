#!/usr/bin/env bash
# Full fine-tuning SFT with the tiny default's recipe (docs/RESULTS.md): SID-only prompts, each
# user's train sequence as one dense row, AdamW beta2 0.98 and weight decay 0.1 (not on
# embeddings), cosine to 5 % after 13 % warm-up, checkpoint kept by valid HR@10 + NDCG@10.
# Every value can be overridden as in scripts/sft.sh (KEY=VALUE or extra --flags).
export MODE=full OUT="${OUT:-out/sft_full}" TEMPLATE="${TEMPLATE:-sids}" TASKS="${TASKS:-next_sid}" \
  DENSE="${DENSE:-True}" BATCH_SIZE="${BATCH_SIZE:-32}" MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-32}" \
  LR="${LR:-1.5e-3}" EPOCHS="${EPOCHS:-8}" WEIGHT_DECAY="${WEIGHT_DECAY:-0.1}" ADAM_BETA2="${ADAM_BETA2:-0.98}" \
  WARMUP_RATIO="${WARMUP_RATIO:-0.13}" MIN_LR_RATIO="${MIN_LR_RATIO:-0.05}" PATIENCE="${PATIENCE:-3}"
exec bash "$(dirname "$0")/sft.sh" "$@"
