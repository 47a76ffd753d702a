#!/usr/bin/env bash
# Make every picture of the documentation site (docs/img/) with the command line.
#
#   bash docs/make_figures.sh       # trains runs/docs first if it is not there: the mnist preset, 1000 steps
#                                   # (10-40 minutes on 2 CPU cores, depending on what else runs)
#
# RUN=DIR uses another run directory, DEVICE=cuda trains and samples on a GPU. Training is step-based and
# seeded, so on the same CPU and torch the same commands give the same weights and pictures. docs/tutorial.md shows
# each command next to its picture.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/docs}
DEVICE=${DEVICE:-cpu}
IMG=docs/img
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$IMG"

# 1. The model.
if [ ! -f "$RUN/checkpoint.safetensors" ]; then
    noisecraft train --preset mnist --steps 1000 --out "$RUN" --device "$DEVICE"
fi

# 2. The forward process of the first MNIST digit: two training schedules, the same noise (seed 0).
noisecraft forward --noise-schedule linear --num 8 --seed 0 --out "$IMG/forward-linear.png"
noisecraft forward --noise-schedule cosine --num 8 --seed 0 --out "$IMG/forward-cosine.png"

# 3. The reverse process of one sample (Heun, 18 Karras steps), as a strip and a GIF.
noisecraft sample --checkpoint "$RUN" --num 1 --seed 2 --sampler heun --steps 18 --trajectory "$IMG/reverse.png" \
    --out "$TMP/one.png" --device "$DEVICE"
noisecraft sample --checkpoint "$RUN" --num 1 --seed 2 --sampler heun --steps 18 --trajectory "$IMG/reverse.gif" \
    --out "$TMP/one.png" --device "$DEVICE"

# 4. A grid of 64 samples.
noisecraft sample --checkpoint "$RUN" --num 64 --seed 0 --out "$IMG/samples.png" --device "$DEVICE"

du -ch "$IMG"/* | tail -n 1
