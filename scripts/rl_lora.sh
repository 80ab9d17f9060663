#!/usr/bin/env bash
# GRPO on an SFT run with constrained beam rollouts, continuing its LoRA adapter.
# Settings are environment variables (or KEY=VALUE arguments); extra --flags go to rl.py.
# PEFT=use_qlora loads the base in 4-bit (scripts/rl_qlora.sh); PEFT=none trains all weights
# (scripts/rl_full.sh).
source "$(dirname "$0")/_common.sh"
PEFT="${PEFT:-use_lora}"
exec "$PYTHON" rl.py \
  --model_path "${MODEL:-out/sft_lora}" \
  --output_dir "${OUT:-out/rl_lora}" \
  ${PEFT:+$([[ "$PEFT" != none ]] && echo "--$PEFT True")} \
  --num_generations "${NUM_GENERATIONS:-16}" --prompts_per_step "${PROMPTS_PER_STEP:-8}" \
  --reward_type "${REWARD:-ranking}" --add_target "${ADD_TARGET:-True}" \
  --beta "${BETA:-1e-3}" --loss_type "${LOSS:-grpo}" \
  --learning_rate "${LR:-1e-4}" --num_epochs "${EPOCHS:-1}" --max_prompts "${MAX_PROMPTS:-2400}" \
  --eval_steps "${EVAL_STEPS:-100}" --eval_rows "${EVAL_ROWS:-1000}" --seed "${SEED:-42}" \
  ${DEEPSPEED:+--deepspeed "$DEEPSPEED"} \
  "${EXTRA[@]}"
