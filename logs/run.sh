#!/usr/bin/env bash
# usage: run.sh NAME flags...   -> runs/NAME, logs/NAME.log, then valid eval (beam 50) into runs/NAME/eval_valid
cd /work/main
export OMP_NUM_THREADS=${THREADS:-1}
name=$1; shift
start=$(date +%s)
.venv/bin/python sft.py --output_dir runs/$name --report_to tensorboard --greedy_eval_rows 0 "$@" > logs/$name.log 2>&1 || { echo "FAILED $name" >> logs/queue.log; exit 1; }
mid=$(date +%s)
.venv/bin/python evaluate.py --model_path runs/$name --split valid --num_beams 50 --batch_size 16 > logs/$name.eval.log 2>&1
end=$(date +%s)
echo "$name sft_s=$((mid-start)) eval_s=$((end-mid)) flags: $*" >> logs/queue.log
