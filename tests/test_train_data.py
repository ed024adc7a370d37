"""Training data helpers: caption sampling, bucket batching, crops that carry keypoints."""
import random
from collections import Counter

import numpy as np

from curation import samples
from infu_model.train_data import control_for, sample_caption, to_bucket
from pipelines.train.loaders import bucket_batches

CAPS = [{"source": "dataset", "text": "d"}, {"source": "blip2", "text": "b"}, {"source": "internvl2", "text": "i1"},
        {"source": "internvl2", "text": "i2"}]


def test_caption_sampler_respects_weights_and_dropout():
    rng = random.Random(0)
    weights = {"dataset": 1, "blip2": 1, "internvl2": 2}
    n = 20000
    got = Counter(sample_caption(CAPS, weights, 0.1, rng) for _ in range(n))
    assert abs(got[""] / n - 0.1) < 0.01
    kept = n - got[""]
    assert abs(got["d"] / kept - 0.25) < 0.015 and abs(got["b"] / kept - 0.25) < 0.015
    assert abs((got["i1"] + got["i2"]) / kept - 0.5) < 0.015 and abs(got["i1"] - got["i2"]) / kept < 0.03
    only = Counter(sample_caption(CAPS, {"blip2": 1}, 0.0, rng) for _ in range(100))
    assert only == {"b": 100}
    assert sample_caption([], weights, 0.0, rng) == "" and sample_caption(CAPS, {"other": 1}, 0.0, rng) == ""


def test_bucketing_never_mixes_shapes_and_loses_nothing():
    rng = random.Random(1)
    rows = [{"id": i, "bucket": rng.choice(["1024x1024", "896x1152", "1152x896"])} for i in range(1000)]
    batches = list(bucket_batches(iter(rows), 16))
    assert all(len({r["bucket"] for r in b}) == 1 for b in batches)
    assert sorted(r["id"] for b in batches for r in b) == list(range(1000))
    assert sum(len(b) < 16 for b in batches) <= 3
    assert all(len(b) == 16 for b in bucket_batches(iter(rows), 16, drop_last=True))


def test_crop_to_bucket_carries_the_keypoints():
    g = samples.grace_hopper()  # 512x600
    kps = np.array([[200.0, 230.0], [300.0, 230.0], [250.0, 280.0], [215.0, 320.0], [290.0, 320.0]])
    out, moved = to_bucket(g, (896, 1152), kps)
    assert out.size == (896, 1152)
    s = max(896 / 512, 1152 / 600)
    assert np.allclose(moved[2] - moved[0], (kps[2] - kps[0]) * s)
    # the nose pixel of the original lands where the moved keypoint says
    src = np.asarray(g.resize((round(512 * s), round(600 * s))))
    ox = round((512 * s - 896) / 2)
    assert np.allclose(np.asarray(out)[300, 400], src[300, 400 + ox], atol=2)
    ctrl = control_for((896, 1152), moved, black_prob=0.0, rng=random.Random(0))
    x, y = moved[2].astype(int)
    assert tuple(np.asarray(ctrl)[y, x]) == (0, 0, 255)
    assert not np.asarray(control_for((896, 1152), moved, 1.0, random.Random(0))).any()
