#!/usr/bin/env bash
# Create .venv and install the project with its dev extras. Idempotent.
#
#   bash scripts/setup.sh            this CPU machine: the CPU build of torch that lies on disk here
#   bash scripts/setup.sh --gpu      a CUDA node: torch with CUDA, onnxruntime-gpu in place of onnxruntime
#                                    (insightface, nudenet and the OCR detector then run on the GPU),
#                                    bitsandbytes and torchao (8-bit AdamW, 8-bit and FP8 weights), gradio
#   --dry-run                        print the pip commands instead of running them
# TORCH_INDEX=URL picks torch's wheel index for --gpu (e.g. https://download.pytorch.org/whl/cu128);
# without it PyPI's Linux wheel is used, which is built with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=0 DRY=0
for arg in "$@"; do
    case "$arg" in
        --gpu) GPU=1 ;;
        --dry-run) DRY=1 ;;
        *) echo "usage: bash scripts/setup.sh [--gpu] [--dry-run]" >&2; exit 2 ;;
    esac
done
run() { if [ "$DRY" = 1 ]; then echo "$*"; else "$@"; fi; }
PY=${PYTHON:-python3}
[ "$DRY" = 1 ] || [ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
run $PIP install -q --upgrade pip
if [ "$GPU" = 1 ]; then
    run $PIP install -q "torch==2.13.0" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
    run $PIP install -q -e ".[dev,quant,app]"
    # onnxruntime and onnxruntime-gpu install the same module: the CPU one goes first, never both
    ORT=$(.venv/bin/python -c "import onnxruntime; print(onnxruntime.__version__)" 2>/dev/null || echo "")
    run $PIP uninstall -q -y onnxruntime
    run $PIP install -q --force-reinstall --no-deps "onnxruntime-gpu${ORT:+==$ORT}"
else
    # The CPU build of torch that lies on disk here; never a CUDA build, never torchvision.
    run $PIP install -q "torch==2.13.0"
    run $PIP install -q -e ".[dev]"
fi
run $PIP install -q --no-deps "nudenet==3.4.2"
run .venv/bin/python -c "import torch, ray, diffusers, cv2, dlib, nudenet, insightface; print('setup ok: torch', torch.__version__, 'ray', ray.__version__, 'diffusers', diffusers.__version__, 'cv2', cv2.__version__)"
if [ "$GPU" = 1 ]; then  # where every job's models will run, and a failure when torch or onnxruntime has no CUDA
    run .venv/bin/python -c "import torch, onnxruntime as o; assert torch.cuda.is_available(), 'torch has no CUDA'; assert 'CUDAExecutionProvider' in o.get_available_providers(), 'onnxruntime has no CUDA provider'"
    run .venv/bin/infu doctor
fi
