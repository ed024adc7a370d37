#!/usr/bin/env bash
# Set up .venv (idempotent) and run the main job on embedded defaults:
# curate a sample set of real photos that ship inside installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled
.venv/bin/infu sample-data runs/sample
.venv/bin/infu curate --source folder=runs/sample --out runs/curated --overwrite --quiet
# a tiny random FLUX + InfU in the published layout, then one generation through the real loaders
.venv/bin/infu make-tiny runs/tiny
.venv/bin/infu generate --base runs/tiny/base --infu runs/tiny/infu_flux_v1.0 \
    --id-image runs/sample/portraits/grace_hopper.jpg --prompt "a portrait photo, studio light" \
    --width 128 --height 128 --steps 8 --dtype float32 --device cpu --out runs/generated.png
