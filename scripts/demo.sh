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
# train the tiny model a few steps on the curated sample set, then generate from its checkpoint
cat > runs/demo_train.yaml <<'YAML'
stage: 1
model: {base: runs/tiny/base, embedding_dim: 128, face_backend: dlib, dtype: float32}
data: {parquet: runs/curated, max_side: 64, max_sequence_length: 32}
train: {lr: 1.0e-4, global_batch_size: 2, micro_batch_size: 1, max_steps: 4, warmup_steps: 1, checkpoint_every: 2}
output: runs/train
YAML
rm -rf runs/train
.venv/bin/infu train --config runs/demo_train.yaml
.venv/bin/infu generate --base runs/tiny/base --infu runs/train/final \
    --id-image runs/sample/portraits/astronaut.png --prompt "a portrait photo" \
    --width 64 --height 64 --steps 4 --dtype float32 --device cpu --out runs/generated_trained.png
