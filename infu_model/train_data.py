"""Per-sample preparation for InfU training, as plain functions over SPSS/SPMS
record fields (no Ray, no I/O): caption sampling by source weight, aspect-ratio
bucket batching, resize-and-crop to the bucket with the keypoints carried along,
and the keypoint control image (black with a configured probability, since
inference allows no control).
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from infu_model.control import black_control, draw_kps


def sample_caption(captions: list[dict] | None, weights: dict[str, float], dropout: float, rng: random.Random) -> str:
    """One caption, its source drawn by ``weights`` among the sources present; ``""``
    with probability ``dropout`` (or when the record has none)."""
    if not captions or rng.random() < dropout:
        return ""
    by_source = defaultdict(list)
    for c in captions:
        if weights.get(c["source"], 0) > 0:
            by_source[c["source"]].append(c["text"])
    if not by_source:
        return ""
    sources = sorted(by_source)
    src = rng.choices(sources, weights=[weights[s] for s in sources])[0]
    return rng.choice(by_source[src])


def bucket_batches(rows: Iterable[dict], batch_size: int, drop_last: bool = False) -> Iterator[list[dict]]:
    """Group rows by their ``bucket`` into batches of one shape each, streaming: a
    batch leaves as soon as its bucket holds ``batch_size`` rows."""
    pending: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        b = pending[row["bucket"]]
        b.append(row)
        if len(b) == batch_size:
            yield b
            pending[row["bucket"]] = []
    if not drop_last:
        for b in pending.values():
            if b:
                yield b


def cover_crop(size: tuple[int, int], target: tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """Scale and top-left offset that make an image of ``size`` cover ``target`` centred."""
    (w, h), (tw, th) = size, target
    s = max(tw / w, th / h)
    return s, (int(round((w * s - tw) / 2)), int(round((h * s - th) / 2)))


def to_bucket(img: Image.Image, target: tuple[int, int], kps=None):
    """The image resized to cover ``target`` and centre-cropped; keypoints moved the same way."""
    s, (ox, oy) = cover_crop(img.size, target)
    resized = img.convert("RGB").resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                                        Image.Resampling.LANCZOS)
    out = resized.crop((ox, oy, ox + target[0], oy + target[1]))
    if kps is None:
        return out, None
    return out, np.asarray(kps, np.float64) * s - np.array([ox, oy])


def control_for(target: tuple[int, int], kps, black_prob: float, rng: random.Random) -> Image.Image:
    """The keypoint control image for a training target (black when drawn so, or without keypoints)."""
    if kps is None or rng.random() < black_prob:
        return black_control(target)
    return draw_kps(target, kps)
