"""Actor pools follow the cluster: GPU shares where a stage's model runs on cuda, none elsewhere
(Ray assigning those GPUs to the actors: tests/test_cluster.py)."""

import pytest

from curation.engine import ConfigError
from pipelines.jobs import load_config
from pipelines.ray_stages import resolve_gpus

AUTO = {"num_cpus": 0.25, "num_gpus": None, "batch_size": 8, "concurrency": None}
GEN = {"generation": {"width": 64, "height": 64, "steps": 4, "resources": AUTO}, "model": {"device": "cuda"}}


def pools(stages, gpus):
    return {s.label: (s.resources.gpus, s.resources.actors) for s in resolve_gpus(stages, gpus)}


def test_pools_on_cuda_share_the_cluster_gpus_and_the_rest_ask_for_none():
    curate = load_config("curate", overrides={"stages": [
        {"name": "faces", "backend": "insightface", "insightface": {"device": "cuda"}, "resources": AUTO},
        {"name": "nsfw", "resources": AUTO},                      # nudenet: the CPU
        {"name": "watermark", "device": "cuda", "resources": AUTO}]})
    caption = load_config("caption", overrides={"captioners": [
        {"name": "blip2", "model": "/m", "device": "cuda", "resources": AUTO},
        {"name": "internvl", "model": None, "device": "cuda", "resources": AUTO}]})   # disabled
    stages = [*curate.stages, *caption.stages()]
    # 4 GPUs over three cuda pools: 4/3 each; 0.25-GPU face and OCR actors x5, 0.5-GPU captioners x2
    assert pools(stages, 4) == {"faces": (0.25, 5), "nsfw": (0, 1), "watermark": (0.25, 5), "blip2": (0.5, 2),
                                "internvl": (0, 1)}
    assert pools(stages, 0) == {"faces": (0, 1), "nsfw": (0, 1), "watermark": (0, 1), "blip2": (0, 1), "internvl": (0, 1)}
    assert pools([load_config("synth", overrides=GEN).generate], 8) == {"generate": (1.0, 8)}, \
        "FLUX: a whole GPU per actor, an actor per GPU"
    fixed = {**GEN, "generation": {**GEN["generation"], "resources": {**AUTO, "num_gpus": 2, "concurrency": 3}}}
    assert pools([load_config("synth", overrides=fixed).generate], 8) == {"generate": (2, 3)}, "what the config sets is kept"
    dlib = load_config("curate", overrides={"stages": [{"name": "faces", "backend": "dlib", "resources": AUTO}]})
    assert pools(list(dlib.stages), 4) == {"faces": (0, 1)}, "dlib runs on the CPU"


def test_a_resources_key_that_is_not_a_resource_is_an_error():
    with pytest.raises(ConfigError, match=r"resources: unknown key 'num_gpu' \(did you mean 'num_gpus'\?\)"):
        load_config("curate", overrides={"stages": [{"name": "faces", "resources": {"num_gpu": 1}}]})
