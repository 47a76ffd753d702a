#!/usr/bin/env bash
# Set up and run the whole test suite: ruff, then pytest (the default selection skips `-m slow`).
# Extra arguments go to pytest (e.g. -m slow for the long checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. "${NOISECRAFT_VENV:-.venv}/bin/activate"
# Reference implementations for the metric parity tests. --no-deps: they would pull torchvision and
# another torch; the functions we compare against need only numpy/scipy.
python -m pip install --quiet --no-deps "pytorch-fid>=0.3" "torch-fidelity>=0.4"
ruff check .
python -m pytest -q "$@"
