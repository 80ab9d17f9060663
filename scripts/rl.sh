#!/usr/bin/env bash
# The GRPO launcher the presets call (rl_full.sh, rl_lora.sh, rl_qlora.sh): constrained beam
# rollouts on an SFT run. Settings are environment variables (or KEY=VALUE arguments); extra
# --flags go to rl.py. PEFT=none (default) trains all weights, use_lora continues or adds a LoRA
# adapter, use_qlora does so on a 4-bit base. NPROC=N runs N processes under torchrun,
# DEEPSPEED=configs/deepspeed/zero2.json adds DeepSpeed; PROMPTS_PER_STEP is global for any NPROC.
# Prompts come from the whole train split (MAX_PROMPTS=0, seeded random order) for MAX_STEPS=300
# steps (-1: EPOCHS passes instead; one pass is ~4,500 steps); keep-best checks every EVAL_STEPS
# on all valid rows (EVAL_ROWS=0).
source "$(dirname "$0")/_common.sh"
PEFT="${PEFT:-none}"
exec "${LAUNCH[@]}" rl.py \
  --model_path "${MODEL:-out/sft_full}" \
  --output_dir "${OUT:-out/rl}" \
  $([[ "$PEFT" != none ]] && echo "--$PEFT True") \
  --num_generations "${NUM_GENERATIONS:-16}" --prompts_per_step "${PROMPTS_PER_STEP:-8}" \
  --reward_type "${REWARD:-ranking}" --add_target "${ADD_TARGET:-False}" --dynamic_sampling "${DYNAMIC_SAMPLING:-True}" \
  --beta "${BETA:-1e-3}" --loss_type "${LOSS:-grpo}" \
  --learning_rate "${LR:-1e-4}" --num_epochs "${EPOCHS:-1}" --max_prompts "${MAX_PROMPTS:-0}" \
  --max_steps "${MAX_STEPS:-300}" \
  --prompt_order "${PROMPT_ORDER:-random}" \
  --eval_steps "${EVAL_STEPS:-100}" --eval_rows "${EVAL_ROWS:-0}" --seed "${SEED:-42}" \
  ${DEEPSPEED:+--deepspeed "$DEEPSPEED"} \
  ${EXTRA[@]+"${EXTRA[@]}"}
