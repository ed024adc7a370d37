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
# synthesise SPMS pairs from the curated identities with the tiny model as the stage-1 InfU
# (face swap none); the summary shows the ID filter's decision on every target
cat > runs/demo_synth.yaml <<'YAML'
model: {dtype: float32, device: cpu}
generation: {width: 64, height: 64, steps: 4}
prompts: {per_source: 2, seeds_per_prompt: 1}
select: {max_sources: 3}
YAML
.venv/bin/infu synth --spss runs/curated --model runs/tiny/infu_flux_v1.0 --base runs/tiny/base \
    --config runs/demo_synth.yaml --out runs/spms --overwrite --quiet
# score the trained checkpoint on the 200-prompt portrait benchmark with two sample identities
# (ID loss with the offline dlib backend; CLIPScore/PickScore need local weights and say so)
mkdir -p runs/eval_ids
cp runs/sample/portraits/grace_hopper.jpg runs/sample/portraits/astronaut.png runs/eval_ids/
cat > runs/eval_ids/ids.yaml <<'YAML'
identities:
  - {name: grace_hopper, gender: female, reference: grace_hopper.jpg}
  - {name: eileen_collins, gender: female, reference: astronaut.png}
YAML
cat > runs/demo_eval.yaml <<'YAML'
model: {dtype: float32, device: cpu}
generation: {width: 64, height: 64, steps: 4}
YAML
rm -rf runs/eval
.venv/bin/infu eval --model runs/train/final --base runs/tiny/base --ids runs/eval_ids --face-backend dlib \
    --config runs/demo_eval.yaml --label "tiny (4 steps)" --out runs/eval --quiet
