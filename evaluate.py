"""Offline evaluation: python evaluate.py --model_path out/sft_full --split test --num_beams 50."""

from minirec.cli import run_cli
from minirec.evaluate import evaluate

if __name__ == "__main__":
    run_cli(evaluate)
