# Sourced by the other scripts. KEY=VALUE arguments become environment overrides
# (bash scripts/sft_lora.sh DATA=data/Office_Products EPOCHS=1); anything else is passed
# through to the Python entry point as extra flags.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRA=()
for arg in "$@"; do
  if [[ "$arg" =~ ^[A-Z_][A-Z0-9_]*= ]]; then export "${arg?}"; else EXTRA+=("$arg"); fi
done
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
