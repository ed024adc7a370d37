"""The tiny engine on CUDA (``bash scripts/gpu_smoke.sh`` on a GPU node set up with ``setup.sh --gpu``).

``configs/pipeline-tiny.yaml`` (curate -> caption -> train stage 1 -> synth -> eval, tiny random
FLUX + InfU, a tiny BLIP-2, the sample photos) runs twice through ``infu run``: every model on the
CPU, then every model that can on CUDA (nudenet and the OCR detector through onnxruntime-gpu, BLIP-2,
training in bf16 on a GPU worker, synthesis and evaluation). It checks that each model is placed on
the GPU before the run (``infu doctor``'s rule, which the sessions follow) and that each job said so at
start, then that both runs account for the same rows. dlib, the offline face backend the tiny model
is trained with, has no CUDA build: it stays on the CPU in both runs.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def prepare(work: Path) -> dict:
    from curation.samples import write_sample_set
    from infu_model.tiny import make_tiny
    from tiny_vlm import make_tiny_blip2

    tiny = make_tiny(work / "tiny")
    write_sample_set(work / "sample")
    ids = work / "eval_ids"
    ids.mkdir(exist_ok=True)
    for name in ("grace_hopper.jpg", "astronaut.png"):
        shutil.copy(work / "sample" / "portraits" / name, ids / name)
    (ids / "ids.yaml").write_text(yaml.safe_dump({"identities": [
        {"name": "grace_hopper", "gender": "female", "reference": "grace_hopper.jpg"},
        {"name": "eileen_collins", "gender": "female", "reference": "astronaut.png"}]}))
    return {"base": str(tiny["base"]), "blip2": str(make_tiny_blip2(work / "blip2")), "sample": str(work / "sample"),
            "ids": str(ids)}


def pipeline(work: Path, parts: dict, device: str) -> Path:
    """configs/pipeline-tiny.yaml with every model's device set to ``device``."""
    spec = yaml.safe_load((ROOT / "configs" / "pipeline-tiny.yaml").read_text())
    stages = spec["stages"]
    gpu = device.startswith("cuda")
    spec.update(root=str(work / f"run-{device}"), base=parts["base"], sources=[f"folder:sample={parts['sample']}"])
    stages["curate"] = {"set": {"stages": [{"name": "faces", "backend": "dlib"}, {"name": "nsfw", "device": device},
                                           {"name": "watermark", "device": device}]}}
    stages["caption"] = {"set": {"captioners": [{"name": "blip2", "model": parts["blip2"], "device": device}]}}
    train = stages["train_stage1"]["set"]
    train["model"]["dtype"] = "bfloat16" if gpu else "float32"
    train["ray"] = {"use_gpu": gpu, "num_workers": 1, "fsdp": False}
    for name in ("synth", "eval"):
        stages[name]["set"]["model"] = {"dtype": "float32", "device": device}
    stages["eval"]["ids"] = parts["ids"]
    path = work / f"pipeline-{device}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def placements(path: Path) -> dict[str, list]:
    from pipelines.doctor import placements as placed
    from pipelines.run import read_pipeline

    return {step.name: placed(step.cfg) for step in read_pipeline(path)[1]}


def accounting(path: Path) -> dict:
    """Rows in and out of each stage (what ``infu run`` recorded), and curation's reasons."""
    from pipelines.run import DONE, read_pipeline

    steps = read_pipeline(path)[1]
    done = {s.name: json.loads((s.out / DONE).read_text())["report"] for s in steps}
    curated = json.loads((steps[0].out / "stats.json").read_text())
    return {**{name: (r["in"], r["out"]) for name, r in done.items()}, "curate reasons": curated["by_reason"]}


def main() -> int:
    """``--cpu-only``: the CPU half alone (what this script checks, on a machine without a GPU)."""
    import torch

    devices = ("cpu",) if "--cpu-only" in sys.argv else ("cpu", "cuda")
    if "cuda" in devices and not torch.cuda.is_available():
        print("gpu smoke: torch sees no CUDA device (bash scripts/setup.sh --gpu on a GPU node)")
        return 2
    work = ROOT / "runs" / "gpu_smoke"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    parts = prepare(work)
    runs = {}
    for device in devices:
        path = pipeline(work, parts, device)
        placed = placements(path)
        wrong = [f"{stage}: {p.line()}" for stage, ps in placed.items() for p in ps
                 if p.runtime != "dlib" and not p.runs_on.startswith(device)]
        assert not wrong, "models not placed on " + device + ":\n" + "\n".join(wrong)
        r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(path), "--quiet"], cwd=ROOT,
                           capture_output=True, text=True)
        print(r.stdout[-4000:], r.stderr[-4000:], sep="\n")
        assert r.returncode == 0, f"infu run on {device} failed"
        said = [ln for ln in (r.stdout + r.stderr).splitlines() if ": runs on " in ln]
        assert said and all(f"runs on {device}" in ln or "(dlib)" in ln for ln in said), said
        runs[device] = accounting(path)
    for key in runs["cpu"]:
        print(f"{key:<16}" + "  ".join(f"{d} {runs[d][key]}" for d in devices))
    if "cuda" not in runs:
        print("gpu smoke: the CPU half ran (--cpu-only)")
        return 0
    assert runs["cpu"] == runs["cuda"], "the GPU run accounts for its rows differently"
    card = torch.cuda.get_device_name(0)
    print(f"gpu smoke: ok on {card} (torch {torch.__version__}, CUDA {torch.version.cuda}): every stage on cuda, "
          "same accounting as on the CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
