#!/usr/bin/env bash
# GRPO on a full fine-tuned SFT run (the tiny default's main job), training all weights.
source "$(dirname "$0")/_common.sh"
exec "$PYTHON" rl.py \
  --model_path "${MODEL:-out/sft_full}" \
  --output_dir "${OUT:-out/rl_full}" \
  --num_generations "${NUM_GENERATIONS:-16}" --prompts_per_step "${PROMPTS_PER_STEP:-8}" \
  --reward_type "${REWARD:-ranking}" --beta "${BETA:-1e-3}" --loss_type "${LOSS:-grpo}" \
  --learning_rate "${LR:-1e-5}" --num_epochs "${EPOCHS:-1}" --max_prompts "${MAX_PROMPTS:-2048}" \
  --eval_steps "${EVAL_STEPS:-50}" --eval_rows "${EVAL_ROWS:-256}" --seed "${SEED:-42}" \
  ${DEEPSPEED:+--deepspeed "$DEEPSPEED"} \
  "${EXTRA[@]}"
