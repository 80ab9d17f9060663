# Sourced by the other scripts. KEY=VALUE arguments become environment overrides
# (bash scripts/sft.sh DATA=data/Office_Products EPOCHS=1); anything else is passed
# through to the Python entry point as extra flags.
set -euo pipefail
# Under set -u, bash < 4.4 (macOS's 3.2 among them) calls an empty array unbound: expand one that
# can be empty as ${ARR[@]+"${ARR[@]}"} (tests/test_scripts.py checks every script does).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRA=()
for arg in "$@"; do
  if [[ "$arg" =~ ^[A-Z_][A-Z0-9_]*= ]]; then export "${arg?}"; else EXTRA+=("$arg"); fi
done
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# NPROC=N starts N processes on this machine through torchrun (one per GPU; gloo on CPU);
# NPROC=1, the default, runs plain python. Multi-node jobs call torchrun themselves.
NPROC="${NPROC:-1}"
if [[ ! "$NPROC" =~ ^[1-9][0-9]*$ ]]; then echo "error: NPROC=$NPROC: give a positive process count" >&2; exit 2; fi
if (( NPROC > 1 )); then
  LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
else
  LAUNCH=("$PYTHON")
fi
