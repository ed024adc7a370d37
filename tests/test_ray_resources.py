"""Actor pools follow the cluster: GPU shares where a stage's model runs on cuda, none elsewhere."""
import json
import os
import subprocess
import sys
from pathlib import Path

from curation.caption_stage import CaptionStage
from curation.faces import FaceStage
from curation.nsfw import NSFWStage
from curation.watermark import WatermarkStage
from pipelines.ray_stages import resolve_gpus
from synth.generate import GenerateStage

ROOT = Path(__file__).resolve().parent.parent
AUTO = {"num_cpus": 0.25, "num_gpus": None, "batch_size": 8, "concurrency": None}
GEN = {"width": 64, "height": 64, "steps": 4, "guidance": 3.5, "device": "cuda"}


def pools(stages, gpus):
    return {cls(c).cfg.get("name", cls.name): (cls(c).resources.num_gpus, cls(c).resources.concurrency)
            for cls, c in resolve_gpus(stages, gpus)}


def test_pools_on_cuda_share_the_cluster_gpus_and_the_rest_ask_for_none():
    stages = [(FaceStage, {"backend": "insightface", "insightface": {"device": "cuda"}, "resources": AUTO}),
              (NSFWStage, {"resources": AUTO}),                       # nudenet: the CPU
              (WatermarkStage, {"device": "cuda", "resources": AUTO}),
              (CaptionStage, {"name": "blip2", "model": "/m", "device": "cuda", "resources": AUTO}),
              (CaptionStage, {"name": "internvl", "model": None, "device": "cuda", "resources": AUTO})]  # disabled
    # 4 GPUs over three cuda pools: 4/3 each; 0.25-GPU face and OCR actors x5, 0.5-GPU captioners x2
    assert pools(stages, 4) == {"faces": (0.25, 5), "nsfw": (0, 1), "watermark": (0.25, 5), "blip2": (0.5, 2),
                                "internvl": (0, 1)}
    assert pools(stages, 0) == {"faces": (0, 1), "nsfw": (0, 1), "watermark": (0, 1), "blip2": (0, 1), "internvl": (0, 1)}
    flux = [(GenerateStage, {**GEN, "resources": AUTO})]
    assert pools(flux, 8) == {"generate": (1.0, 8)}, "FLUX: a whole GPU per actor, an actor per GPU"
    fixed = [(GenerateStage, {**GEN, "resources": {**AUTO, "num_gpus": 2, "concurrency": 3}})]
    assert pools(fixed, 8) == {"generate": (2, 3)}, "what the config sets is kept"
    assert pools([(FaceStage, {"backend": "dlib", "resources": AUTO})], 4) == {"faces": (0, 1)}, "dlib runs on the CPU"


def test_ray_gives_each_actor_of_a_resolved_pool_its_gpu():
    """An embedded Ray that declares two GPUs: a 0.5-GPU pool gets four actors, two per GPU, and
    each sees its own GPU in CUDA_VISIBLE_DEVICES (what torch and onnxruntime then use)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "gpu_probe.py")], capture_output=True, text=True,
                         timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "actor pools: probe 4 x (0.25 CPU, 0.5 GPU)" in out.stdout
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["resources"]["num_gpus"] == 0.5 and got["resources"]["concurrency"] == 4
    actors = {(s["pid"], tuple(s["gpu_ids"]), s["visible"]) for s in got["seen"]}
    assert len(got["seen"]) == 16 and len(actors) == 4
    assert sorted(gpu for _, (gpu,), _ in actors) == ["0", "0", "1", "1"]
    assert all(visible == gpu for _, (gpu,), visible in actors)
