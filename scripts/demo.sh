#!/usr/bin/env bash
# Set up .venv (idempotent) and run the main job on embedded defaults:
# curate a sample set of real photos that ship inside installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled
.venv/bin/infu sample-data runs/sample
.venv/bin/infu curate --source folder=runs/sample --out runs/curated --overwrite --quiet
