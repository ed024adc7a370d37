#!/usr/bin/env bash
# Create .venv and install the project with its dev extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch that lies on disk here; never a CUDA build, never torchvision.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps "nudenet==3.4.2"
python -c "import torch, ray, diffusers, cv2, dlib, nudenet, insightface; print('setup ok: torch', torch.__version__, 'ray', ray.__version__, 'diffusers', diffusers.__version__, 'cv2', cv2.__version__)"
