#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install noisecraft into it.
#   usage: scripts/setup.sh [EXTRAS]        e.g. scripts/setup.sh dev
# Environment:
#   NOISECRAFT_TORCH  the torch requirement to install first (default torch==2.13.0, a CPU wheel on CPU
#                     machines). GPU users name theirs, e.g. NOISECRAFT_TORCH="torch==2.13.0+cu128
#                     --index-url https://download.pytorch.org/whl/cu128". Installing torch first keeps pip
#                     from resolving a bare `torch` to the multi-GB CUDA build.
#   NOISECRAFT_VENV   where the environment lives (default .venv in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-data}"
venv="${NOISECRAFT_VENV:-.venv}"
torch_req="${NOISECRAFT_TORCH:-torch==2.13.0}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086  # the requirement may carry pip options (an index URL)
python -m pip install --quiet $torch_req
python -m pip install --quiet -e ".[$extras]"
