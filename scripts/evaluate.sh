#!/usr/bin/env bash
# Constrained beam-search evaluation (HR@K, NDCG@K, MRR) of a run on a split.
# NPROC=N shards the rows over N processes (torchrun; one GPU each) and merges the metrics.
# REPEAT_PRIOR=W adds the user's re-bought items (evaluate.py --repeat_prior; 0, the default: the
# model's beam alone); scripts/pipeline.sh passes the W chosen on valid.
source "$(dirname "$0")/_common.sh"
exec "${LAUNCH[@]}" evaluate.py \
  --model_path "${MODEL:-out/sft_full}" \
  --split "${SPLIT:-test}" --num_beams "${BEAMS:-50}" --batch_size "${BATCH_SIZE:-64}" \
  --max_rows "${MAX_ROWS:-0}" --repeat_prior "${REPEAT_PRIOR:-0}" \
  ${EXTRA[@]+"${EXTRA[@]}"}
