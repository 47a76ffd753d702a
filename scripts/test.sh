#!/usr/bin/env bash
# Set up and run the whole test suite: ruff, then pytest (the default selection skips `-m slow`).
# Extra arguments go to pytest (e.g. -m slow for the long checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. "${NOISECRAFT_VENV:-.venv}/bin/activate"
ruff check .
python -m pytest -q "$@"
