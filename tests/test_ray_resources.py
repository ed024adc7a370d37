"""Actor pools follow the cluster: GPU shares where a stage's model runs on cuda, none elsewhere
(Ray assigning those GPUs to the actors: tests/test_cluster.py)."""

import pytest

from curation.caption_stage import CaptionStage
from curation.faces import FaceStage
from curation.nsfw import NSFWStage
from curation.watermark import WatermarkStage
from pipelines.ray_stages import resolve_gpus
from synth.generate import GenerateStage

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


def test_a_resources_key_that_is_not_a_resource_is_an_error():
    from curation.stage import Resources

    with pytest.raises(ValueError, match=r"\['num_gpu'\]; allowed: num_cpus, num_gpus"):
        Resources.from_config({"num_gpu": 1, "batch_size": 4})
