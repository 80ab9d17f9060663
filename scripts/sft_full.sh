#!/usr/bin/env bash
# Full fine-tuning SFT with the tiny default's recipe (docs/RESULTS.md): SID-only prompts, each
# user's train sequence as one dense row, AdamW beta2 0.98 and weight decay 0.1 (not on
# embeddings), cosine to 5 % after 13 % warm-up, checkpoint kept by valid HR@10 + NDCG@10.
# For the tiny default: SID rows start from the items' text when the dataset ships
# item_embeddings.npy (--sid_init text; SID_INIT=auto turns it off, ITEM_EMBEDDINGS=file.npy picks
# another file), and under 20,000 train rows (Office_Products' 7,648) it trains 16 epochs instead
# of 8, early stopping included (docs/RESULTS.md, "Levers sized to the data"; two datasets are all
# the evidence). EPOCHS=... overrides the rule. Paths are relative to the repository root.
# Every value can be overridden as in scripts/sft.sh (KEY=VALUE or extra --flags).
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/_common.sh"  # KEY=VALUE arguments become environment overrides
DATA="${DATA:-data/Industrial_and_Scientific}"
# Epochs and item_embeddings.npy are picked from DATA, so an extra --data_dir (sft.py takes the last one
# given) would train another dataset with this one's recipe: refused, naming the DATA=... to pass.
prev=""
for arg in ${EXTRA[@]+"${EXTRA[@]}"} ""; do  # the last "": the flag's value when --data_dir ends the line
  if [[ "$prev" =~ ^--data[-_]dir(=(.*))?$ ]]; then
    echo "error: sft_full.sh sizes epochs and picks item_embeddings.npy from DATA, not --data_dir:" \
      "pass DATA=${BASH_REMATCH[2]:-${arg:-DIR}} instead" >&2
    exit 2
  fi
  prev="$arg"
done
# The rule is for the tiny default; a pretrained BASE_MODEL keeps 8 epochs and its own SID rows.
tiny=0; [[ "${BASE_MODEL:-tiny}" == tiny ]] && tiny=1
train=""  # the file the reader uses (minirec/data/readers.py): the first of these that exists
for f in train.inter train.csv train_partial.inter train_partial.csv; do
  [[ -f "$DATA/$f" ]] && { train="$DATA/$f"; break; }
done
rows=$( [[ -n "$train" ]] && wc -l < "$train" || echo 0)  # one header line: noise
if (( tiny && rows > 0 && rows < 20000 )); then small=1; else small=0; fi
EPOCHS="${EPOCHS:-$( ((small)) && echo 16 || echo 8)}"
if [[ -n "${ITEM_EMBEDDINGS:-}" ]]; then
  SID_INIT="${SID_INIT:-text}"
elif [[ "${SID_INIT:-}" == text || ( -z "${SID_INIT:-}" && tiny -eq 1 && -f "$DATA/item_embeddings.npy" ) ]]; then
  SID_INIT=text ITEM_EMBEDDINGS="$DATA/item_embeddings.npy"
fi
export DATA EPOCHS SID_INIT="${SID_INIT:-auto}" ITEM_EMBEDDINGS="${ITEM_EMBEDDINGS:-}" MODE=full \
  OUT="${OUT:-out/sft_full}" TEMPLATE="${TEMPLATE:-sids}" TASKS="${TASKS:-next_sid}" \
  DENSE="${DENSE:-True}" BATCH_SIZE="${BATCH_SIZE:-32}" MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-32}" \
  LR="${LR:-1.5e-3}" WEIGHT_DECAY="${WEIGHT_DECAY:-0.1}" ADAM_BETA2="${ADAM_BETA2:-0.98}" \
  WARMUP_RATIO="${WARMUP_RATIO:-0.13}" MIN_LR_RATIO="${MIN_LR_RATIO:-0.05}" PATIENCE="${PATIENCE:-3}"
exec bash "$here/sft.sh" ${EXTRA[@]+"${EXTRA[@]}"}
