"""The SPMS pair: one Arrow schema for every row that flows through synthesis.

A row is one planned (source identity image, prompt, seed) job; generation fills
the target, the filters score it, and it ends kept, rejected or quarantined like
an SPSS row. Transient ``_source_*`` columns carry what generation, face swap and
the ID filter need from the source record; the sink drops them.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

from curation.records import CAPTION

LORA = pa.struct([("path", pa.string()), ("weight", pa.float32())])

SPMS_FIELDS = [
    pa.field("pair_id", pa.string(), nullable=False),    # stable: hash(source_id, prompt_id, seed)
    pa.field("source_id", pa.string(), nullable=False),  # the SPSS record's id (the real identity image)
    pa.field("source", pa.string()),                     # the source record's dataset
    pa.field("identity", pa.string()),
    pa.field("gender", pa.string()),                     # female / male / null (unknown: neutral prompts only)
    pa.field("gender_from", pa.string()),                # label | classifier | null
    pa.field("prompt_id", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("captions", pa.list_(CAPTION)),             # [{source: "prompt", text: prompt}] for training
    pa.field("seed", pa.int64()),
    pa.field("target_image", pa.binary()),               # the synthetic image, encoded once (png by default)
    pa.field("image_format", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("bucket", pa.string()),                     # "WxH" (the generation size)
    pa.field("model", pa.string()),                      # InfU weights (path) and variant that made the target
    pa.field("loras", pa.list_(LORA)),
    pa.field("face_swap", pa.string()),                  # backend applied to the target (none when not)
    pa.field("settings", pa.string()),                   # JSON: steps, guidance, InfuseNet scale/window, dtype
    pa.field("source_id_embedding", pa.list_(pa.float32())),  # the real source's identity (training input)
    pa.field("id_backend", pa.string()),                 # the backend that made source_id_embedding
    pa.field("target_bbox", pa.list_(pa.float32(), 4)),  # the target's face, for stage-2 control images
    pa.field("target_kps", pa.list_(pa.list_(pa.float32(), 2), 5)),
    pa.field("target_det_score", pa.float32()),
    pa.field("face_count", pa.int32()),
    pa.field("id_similarity", pa.float32()),             # cosine(source, target) under id_filter_backend
    pa.field("id_distance", pa.float32()),               # euclidean distance, same embeddings
    pa.field("id_filter_backend", pa.string()),
    pa.field("yaw", pa.float32()),
    pa.field("pitch", pa.float32()),
    pa.field("aesthetic", pa.float32()),                 # null when no aesthetic model is configured
    pa.field("phash", pa.string()),
    pa.field("status", pa.string(), nullable=False),     # kept | rejected | quarantined
    pa.field("reason", pa.string()),
    pa.field("error", pa.string()),
    pa.field("duplicate_of", pa.string()),               # pair_id of the near-duplicate target kept instead
]

TRANSIENT_FIELDS = [
    pa.field("_source_image", pa.binary()),
    pa.field("_source_kps", pa.list_(pa.list_(pa.float32(), 2), 5)),
    pa.field("_source_bbox", pa.list_(pa.float32(), 4)),
    pa.field("_source_embedding", pa.list_(pa.float32())),  # the SPSS record's, with _source_backend
    pa.field("_source_backend", pa.string()),
]

SPMS_SCHEMA = pa.schema(SPMS_FIELDS)
SYNTH_ROW_SCHEMA = pa.schema(SPMS_FIELDS + TRANSIENT_FIELDS)


def pair_id(source_id: str, prompt_id: str, seed: int) -> str:
    return hashlib.sha256(f"spms\x00{source_id}\x00{prompt_id}\x00{seed}".encode()).hexdigest()[:24]


def derived_seed(*parts) -> int:
    """A seed that depends only on ``parts`` (stable across runs, machines and Python hash salts)."""
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:4], "big") & 0x7FFFFFFF


def encode(rgb, fmt: str = "png") -> bytes:
    """An RGB array or PIL image as PNG (lossless, the default) or high-quality JPEG/WebP bytes."""
    import io

    import numpy as np
    from PIL import Image

    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(np.asarray(rgb, np.uint8))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=fmt.upper().replace("JPG", "JPEG"), **({} if fmt == "png" else {"quality": 95}))
    return buf.getvalue()
