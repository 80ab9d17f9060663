#!/usr/bin/env bash
# Qwen2.5-1.5B on one 8-GPU machine, LoRA + ZeRO-2: SFT, its test evaluation, GRPO with MiniOneRec's
# RL settings (constrained beam-search rollouts of 16, 2 epochs, lr 1e-5, KL beta 1e-3), then the
# RL run's test evaluation. scripts/gpu/README.md says what each stage needs and prints.
#
#   bash scripts/gpu/qwen2.5-1.5b_lora.sh BASE_MODEL=/models/Qwen2.5-1.5B
#
# Settings are KEY=VALUE: NPROC (8), OUT (out/qwen2.5-1.5b), DATA, STAGES (the default runs all four:
# "sft sft_eval rl rl_eval"), and SFT_FLAGS / RL_FLAGS / EVAL_FLAGS for extra flags of one stage
# (a flag given again wins: RL_FLAGS="--micro_batch_size 16").
set -euo pipefail  # empty arrays expand as ${ARR[@]+"${ARR[@]}"}: bash < 4.4 calls them unbound
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
for arg in "$@"; do
  if [[ ! "$arg" =~ ^[A-Z_][A-Z0-9_]*= ]]; then
    echo "error: $arg: give settings as KEY=VALUE (extra flags in SFT_FLAGS, RL_FLAGS or EVAL_FLAGS)" >&2; exit 2
  fi
  export "${arg?}"
done
if [[ -z "${BASE_MODEL:-}" ]]; then
  echo "error: BASE_MODEL=/path/to/Qwen2.5-1.5B is required (a local checkpoint; nothing is downloaded)" >&2
  exit 2
fi
export NPROC="${NPROC:-8}" DEEPSPEED="${DEEPSPEED:-configs/deepspeed/zero2.json}"
OUT="${OUT:-out/qwen2.5-1.5b}"
read -r -a SFT_EXTRA <<< "${SFT_FLAGS:-}"
read -r -a RL_EXTRA <<< "${RL_FLAGS:-}"
read -r -a EVAL_EXTRA <<< "${EVAL_FLAGS:-}"
for stage in ${STAGES:-sft sft_eval rl rl_eval}; do
  case "$stage" in
    sft)  # 128 rows per step = 16 per GPU; checkpoint chosen by valid HR@10 + NDCG@10 each epoch
      bash scripts/sft_lora.sh BASE_MODEL="$BASE_MODEL" OUT="$OUT/sft" TEMPLATE=compact \
        LORA_R=16 LORA_ALPHA=32 BATCH_SIZE=128 MICRO_BATCH_SIZE=16 LR=3e-4 EPOCHS=3 ${SFT_EXTRA[@]+"${SFT_EXTRA[@]}"} ;;
    sft_eval)
      bash scripts/evaluate.sh MODEL="$OUT/sft" SPLIT=test BEAMS=50 ${EVAL_EXTRA[@]+"${EVAL_EXTRA[@]}"} ;;
    rl)  # 64 prompts x 16 rollouts per step = 128 completions per GPU, in micro batches of 32
      bash scripts/rl_lora.sh MODEL="$OUT/sft" OUT="$OUT/rl" NUM_GENERATIONS=16 PROMPTS_PER_STEP=64 \
        EPOCHS=2 MAX_STEPS=-1 LR=1e-5 BETA=1e-3 MAX_PROMPTS=0 --micro_batch_size 32 ${RL_EXTRA[@]+"${RL_EXTRA[@]}"} ;;
    rl_eval)
      bash scripts/evaluate.sh MODEL="$OUT/rl" SPLIT=test BEAMS=50 ${EVAL_EXTRA[@]+"${EVAL_EXTRA[@]}"} ;;
    *) echo "error: STAGES: unknown stage $stage (choose from sft sft_eval rl rl_eval)" >&2; exit 2 ;;
  esac
done
