#!/usr/bin/env bash
# Set up and run the main job: train a small diffusion model on the embedded MNIST on the CPU and
# write runs/quickstart/samples.png. Extra arguments go to `noisecraft quickstart` (e.g. --minutes 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh data
. "${NOISECRAFT_VENV:-.venv}/bin/activate"
noisecraft quickstart "$@"
