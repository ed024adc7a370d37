#!/usr/bin/env bash
# The tiny engine with every stage on CUDA, against the same run on the CPU (scripts/gpu_smoke.py).
# On a GPU node: bash scripts/setup.sh --gpu && bash scripts/gpu_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=disabled
.venv/bin/infu doctor
exec .venv/bin/python scripts/gpu_smoke.py "$@"
