#!/usr/bin/env bash
# Full fine-tuning SFT with the tiny default's recipe (docs/RESULTS.md): SID-only prompts, each
# user's train sequence as one dense row, AdamW beta2 0.98 and weight decay 0.1 (not on
# embeddings), cosine to 5 % after 13 % warm-up, checkpoint kept by valid HR@10 + NDCG@10.
# SID rows start from the items' text when the dataset ships item_embeddings.npy (--sid_init text;
# SID_INIT=auto turns it off). Sized by the data: under 20,000 train rows (Office_Products' 7,648)
# 16 epochs and label smoothing LABEL_SMOOTHING_SMALL (docs/RESULTS.md, "Levers sized to the data":
# measured on these two datasets only); EPOCHS=... and LABEL_SMOOTHING=... override the rule.
# Every value can be overridden as in scripts/sft.sh (KEY=VALUE or extra --flags).
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/_common.sh"  # KEY=VALUE arguments become environment overrides
DATA="${DATA:-data/Industrial_and_Scientific}"
rows=$(cat "$DATA"/train*.inter "$DATA"/train*.csv 2>/dev/null | wc -l || true)  # a header line or two: noise
if (( rows > 0 && rows < 20000 )); then small=1; else small=0; fi
LABEL_SMOOTHING="${LABEL_SMOOTHING:-$( ((small)) && echo "${LABEL_SMOOTHING_SMALL:-0.1}" || echo 0)}"
EPOCHS="${EPOCHS:-$( ((small)) && echo 16 || echo 8)}"
if [[ -z "${SID_INIT:-}" && -f "$DATA/item_embeddings.npy" ]]; then
  SID_INIT=text ITEM_EMBEDDINGS="$DATA/item_embeddings.npy"
fi
export DATA LABEL_SMOOTHING EPOCHS SID_INIT="${SID_INIT:-auto}" ITEM_EMBEDDINGS="${ITEM_EMBEDDINGS:-}" MODE=full OUT="${OUT:-out/sft_full}" TEMPLATE="${TEMPLATE:-sids}" TASKS="${TASKS:-next_sid}" \
  DENSE="${DENSE:-True}" BATCH_SIZE="${BATCH_SIZE:-32}" MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-32}" \
  LR="${LR:-1.5e-3}" WEIGHT_DECAY="${WEIGHT_DECAY:-0.1}" ADAM_BETA2="${ADAM_BETA2:-0.98}" \
  WARMUP_RATIO="${WARMUP_RATIO:-0.13}" MIN_LR_RATIO="${MIN_LR_RATIO:-0.05}" PATIENCE="${PATIENCE:-3}"
exec bash "$here/sft.sh" ${EXTRA[@]+"${EXTRA[@]}"}
