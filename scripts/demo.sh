#!/usr/bin/env bash
# Set up .venv (idempotent) and run the main job on embedded defaults: the whole engine
# (curate -> caption -> train stage 1 -> synth -> eval) as one `infu run` on the sample
# photos that ship inside installed packages and a tiny random FLUX + InfU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_AUTH_MODE=disabled
.venv/bin/infu sample-data runs/sample
.venv/bin/infu make-tiny runs/tiny
# two sample identities for the evaluation (ids.yaml: name, gender, reference photo)
mkdir -p runs/eval_ids
cp runs/sample/portraits/grace_hopper.jpg runs/sample/portraits/astronaut.png runs/eval_ids/
cat > runs/eval_ids/ids.yaml <<'YAML'
identities:
  - {name: grace_hopper, gender: female, reference: grace_hopper.jpg}
  - {name: eileen_collins, gender: female, reference: astronaut.png}
YAML
rm -rf runs/pipeline
.venv/bin/infu run configs/pipeline-tiny.yaml
# one generation through the real loaders from the tiny model, and one from the trained checkpoint
.venv/bin/infu generate --base runs/tiny/base --infu runs/tiny/infu_flux_v1.0 \
    --id-image runs/sample/portraits/grace_hopper.jpg --prompt "a portrait photo, studio light" \
    --width 128 --height 128 --steps 8 --dtype float32 --device cpu --out runs/generated.png
.venv/bin/infu generate --base runs/tiny/base --infu runs/pipeline/train-stage1/final \
    --id-image runs/sample/portraits/astronaut.png --prompt "a portrait photo" \
    --width 64 --height 64 --steps 4 --dtype float32 --device cpu --out runs/generated_trained.png
