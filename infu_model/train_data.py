"""Per-sample preparation for InfU training, as plain functions over SPSS/SPMS
record fields (no Ray, no I/O): caption sampling by source weight, aspect-ratio
bucket batching, resize-and-crop to the bucket with the keypoints carried along,
the keypoint control image (black with a configured probability, since inference
allows no control), and the per-sample random generators.

Every random draw of a sample (caption choice, empty-prompt and black-control
dropout, VAE posterior noise, t, the flow noise) comes from generators keyed by
(seed, the sample's position in the global batch sequence, its id): the same
sample gets the same draws whichever worker trains it and however many there are.
"""
from __future__ import annotations

import hashlib
import random
from collections import defaultdict

import numpy as np
import torch
from PIL import Image

from infu_model.control import black_control, draw_kps
from infu_model.images import DecodeError, TooLarge, rgb_image


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


def cover_crop(size: tuple[int, int], target: tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """Scale and top-left offset that make an image of ``size`` cover ``target`` centred."""
    (w, h), (tw, th) = size, target
    s = max(tw / w, th / h)
    return s, (int(round((w * s - tw) / 2)), int(round((h * s - th) / 2)))


def to_bucket(img: Image.Image, target: tuple[int, int], kps=None):
    """The (decoded, upright RGB) image resized to cover ``target`` and centre-cropped; keypoints
    moved the same way."""
    s, (ox, oy) = cover_crop(img.size, target)
    resized = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.LANCZOS)
    out = resized.crop((ox, oy, ox + target[0], oy + target[1]))
    if kps is None:
        return out, None
    return out, np.asarray(kps, np.float64) * s - np.array([ox, oy])


def control_for(target: tuple[int, int], kps, black_prob: float, rng: random.Random) -> Image.Image:
    """The keypoint control image for a training target (black when drawn so, or without keypoints)."""
    if kps is None or rng.random() < black_prob:
        return black_control(target)
    return draw_kps(target, kps)


class Skip(Exception):
    """A record that cannot be trained on; the message is its reason code."""


def sample_rngs(seed: int, position: int, sample_id: str) -> tuple[random.Random, torch.Generator]:
    """(Python, torch) generators for one sample, keyed by the run seed, the global index of the
    micro-batch it is trained in and its id: nothing about the worker that runs it."""
    key = int.from_bytes(hashlib.sha256(f"{seed}|{position}|{sample_id}".encode()).digest()[:8], "little") >> 1
    return random.Random(key), torch.Generator().manual_seed(key)


def bucket_size(bucket: str, max_side: int | None, multiple: int) -> tuple[int, int]:
    """A bucket's training size ``(w, h)``, scaled down to ``max_side`` on multiples of ``multiple``."""
    w, h = (int(x) for x in bucket.split("x"))
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = max(multiple, round(w * s / multiple) * multiple), max(multiple, round(h * s / multiple) * multiple)
    return w, h


def prepare(row: dict, data, emb_dim: int, size, rng: random.Random) -> dict:
    """A training sample from an SPSS/SPMS row (``data``: a training config's ``data`` block, which
    names the columns and the dropouts): target image and control at ``size``, a caption, the identity
    embedding; raises ``Skip`` with the reason when the row cannot be used."""
    emb = row.get(data.embedding_column)
    if emb is None:
        raise Skip("missing_embedding")
    if len(emb) != emb_dim:
        raise Skip("embedding_dim")
    if data.embedding_backend and row.get("id_backend") not in (None, data.embedding_backend):
        raise Skip("embedding_backend")
    if row.get(data.image_column) is None:
        raise Skip("missing_image")
    try:  # the one decoder: upright (EXIF), 16-bit scaled, CMYK via ICC, as curation saw it
        img = rgb_image(row[data.image_column])
    except TooLarge:
        raise Skip("too_large") from None
    except DecodeError:
        raise Skip("decode_error") from None
    img, kps = to_bucket(img, size, row.get(data.kps_column))
    control = control_for(size, kps, data.black_control_prob, rng)
    return {"image": img, "control": control, "black": kps is None or not np.asarray(control).any(),
            "caption": sample_caption(row.get("captions"), data.caption_weights, data.caption_dropout, rng),
            "emb": torch.tensor(emb, dtype=torch.float32), "id": row[data.id_column], "size": size,
            "file": row.get("_file"), "weight": 1.0}


def stand_in(size, emb_dim: int) -> dict:
    """What an unusable row is replaced by: a black sample with loss weight 0, so that every worker
    runs the same number of forward and backward passes (DDP and FSDP communicate in them)."""
    black = black_control(size)
    return {"image": black, "control": black, "black": True, "caption": "", "emb": torch.zeros(emb_dim),
            "id": "", "size": size, "file": None, "weight": 0.0}
