#!/usr/bin/env bash
# Set up .venv, then run the whole test suite (slow end-to-end tests included).
source "$(dirname "$0")/_common.sh"
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest -q ${EXTRA[@]+"${EXTRA[@]}"}
rc=$?
set -e
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
