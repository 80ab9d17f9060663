#!/usr/bin/env bash
# Runs the lines of logs/queue.txt one at a time, in order; appends each finished line to logs/queue.done.
cd /work/main
touch logs/queue.txt logs/queue.done
while true; do
  # wait for any job started outside the queue (run.sh) to finish
  while pgrep -f "sft.py --output_dir runs/|rl.py --model_path|minirec.baselines sasrec" > /dev/null; do sleep 5; done
  next=$(grep -vxF -f logs/queue.done logs/queue.txt | head -1)
  if [[ -z "$next" ]]; then sleep 10; continue; fi
  echo "$(date +%T) start: $next" >> logs/queue.log
  bash -c "$next" >> logs/queue.out 2>&1
  echo "$next" >> logs/queue.done
  echo "$(date +%T) done: $next" >> logs/queue.log
done
