#!/usr/bin/env bash
# The SFT launcher the presets call (sft_full.sh, sft_lora.sh, sft_qlora.sh). Every setting is an
# environment variable (or KEY=VALUE argument); extra --flags go straight to sft.py.
# MODE=full (default), use_lora, use_qlora, load_in_8bit or freeze_llm.
# NPROC=8 runs 8 processes under torchrun; DEEPSPEED=configs/deepspeed/zero2.json adds DeepSpeed
# (configs/README.md says which config fits). BATCH_SIZE is global for any NPROC.
source "$(dirname "$0")/_common.sh"
MODE="${MODE:-full}"
LORA=()
if [[ "$MODE" =~ ^(use_lora|use_qlora|load_in_8bit)$ ]]; then
  LORA=(--lora_r "${LORA_R:-8}" --lora_alpha "${LORA_ALPHA:-16}" --lora_dropout "${LORA_DROPOUT:-0.05}"
        --lora_target_modules "${LORA_TARGET_MODULES:-all}")
fi
exec "${LAUNCH[@]}" sft.py \
  --data_dir "${DATA:-data/Industrial_and_Scientific}" \
  --base_model "${BASE_MODEL:-tiny}" \
  --output_dir "${OUT:-out/sft}" \
  $([[ "$MODE" != full ]] && echo "--$MODE True") \
  ${LORA[@]+"${LORA[@]}"} \
  --tasks "${TASKS:-next_sid,title_to_sid,sid_to_title}" \
  --template "${TEMPLATE:-compact}" --dense "${DENSE:-False}" \
  --batch_size "${BATCH_SIZE:-128}" --micro_batch_size "${MICRO_BATCH_SIZE:-32}" \
  --learning_rate "${LR:-1e-3}" --num_epochs "${EPOCHS:-3}" \
  --weight_decay "${WEIGHT_DECAY:-0.0}" --adam_beta2 "${ADAM_BETA2:-0.999}" \
  --label_smoothing "${LABEL_SMOOTHING:-0}" --sid_init "${SID_INIT:-auto}" \
  ${ITEM_EMBEDDINGS:+--item_embeddings "$ITEM_EMBEDDINGS"} \
  --warmup_ratio "${WARMUP_RATIO:-0.03}" --min_lr_ratio "${MIN_LR_RATIO:-0}" \
  --early_stopping_patience "${PATIENCE:-2}" \
  --cutoff_len "${CUTOFF_LEN:-256}" --seed "${SEED:-42}" \
  ${DEEPSPEED:+--deepspeed "$DEEPSPEED"} \
  ${EXTRA[@]+"${EXTRA[@]}"}
