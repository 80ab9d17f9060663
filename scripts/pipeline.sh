#!/usr/bin/env bash
# The main job on a fresh clone: set up .venv, then SFT (full fine-tuning of the tiny default)
# on the bundled Industrial_and_Scientific data. Results land in ${OUT:-out/sft_full}.
source "$(dirname "$0")/_common.sh"
bash scripts/setup.sh
PYTHON=.venv/bin/python bash scripts/sft_full.sh "$@"
