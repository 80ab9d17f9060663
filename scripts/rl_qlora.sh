#!/usr/bin/env bash
# GRPO with the base loaded in 4-bit NF4 and the SFT adapter continued on top (QLoRA).
source "$(dirname "$0")/_common.sh"
exec "$PYTHON" rl.py \
  --model_path "${MODEL:-out/sft_qlora}" \
  --output_dir "${OUT:-out/rl_qlora}" \
  --use_qlora True \
  --num_generations "${NUM_GENERATIONS:-16}" --prompts_per_step "${PROMPTS_PER_STEP:-8}" \
  --reward_type "${REWARD:-ranking}" --beta "${BETA:-1e-3}" --loss_type "${LOSS:-grpo}" \
  --learning_rate "${LR:-1e-4}" --num_epochs "${EPOCHS:-1}" --max_prompts "${MAX_PROMPTS:-2048}" \
  --eval_steps "${EVAL_STEPS:-50}" --eval_rows "${EVAL_ROWS:-256}" --seed "${SEED:-42}" \
  ${DEEPSPEED:+--deepspeed "$DEEPSPEED"} \
  "${EXTRA[@]}"
