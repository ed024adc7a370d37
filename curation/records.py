"""The SPSS record: one Arrow schema for every row that flows through curation.

Rows carry every SPSS field from the start (null until a stage fills it), so
blocks always concatenate, plus a few transient columns (prefixed ``_``) that
stages use to hand over the decoded analysis image; the sink drops those.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

KEPT, REJECTED, QUARANTINED = "kept", "rejected", "quarantined"
ALIVE = "pending"  # still moving through the stages

CAPTION = pa.struct([("source", pa.string()), ("text", pa.string())])

SPSS_FIELDS = [
    pa.field("id", pa.string(), nullable=False),          # stable: hash(source, path, frame)
    pa.field("source", pa.string(), nullable=False),      # dataset name as given on the command line
    pa.field("path", pa.string(), nullable=False),        # relative to the source root
    pa.field("frame", pa.int32(), nullable=False),        # frame index in a clip, -1 for stills
    pa.field("identity", pa.string()),                    # dataset's person id, when it has one
    pa.field("gender", pa.string()),                      # dataset's label ("female"/"male"), when it has one
    pa.field("image", pa.binary()),                       # original encoded bytes, never re-encoded
    pa.field("image_format", pa.string()),                # jpeg / png / webp ... (png for video frames)
    pa.field("width", pa.int32()),                        # after EXIF orientation
    pa.field("height", pa.int32()),
    pa.field("bucket", pa.string()),                      # aspect-ratio bucket "WxH"
    pa.field("blur", pa.float32()),                       # sharpness, see curation/quality.py
    pa.field("phash", pa.string()),                       # 64-bit perceptual hash, hex
    pa.field("bbox", pa.list_(pa.float32(), 4)),          # x1, y1, x2, y2 in image pixels
    pa.field("kps", pa.list_(pa.list_(pa.float32(), 2), 5)),  # eyes, nose, mouth corners
    pa.field("det_score", pa.float32()),
    pa.field("face_ratio", pa.float32()),                 # face box area / image area
    pa.field("face_count", pa.int32()),
    pa.field("yaw", pa.float32()),
    pa.field("pitch", pa.float32()),
    pa.field("nsfw", pa.float32()),
    pa.field("watermark", pa.float32()),
    pa.field("watermark_text", pa.string()),              # the watermark rule that fired strongest and the text read
    pa.field("watermark_classifier", pa.float32()),       # the watermark classifier's probability of its label
    pa.field("watermark_label", pa.string()),             # the label the watermark classifier ranks first
    pa.field("captions", pa.list_(CAPTION)),
    pa.field("caption_drops", pa.list_(pa.struct([("source", pa.string()), ("reason", pa.string())]))),
    pa.field("id_embedding", pa.list_(pa.float32())),
    pa.field("id_backend", pa.string()),
    pa.field("status", pa.string(), nullable=False),      # kept | rejected | quarantined
    pa.field("reason", pa.string()),                      # stable snake_case code when not kept
    pa.field("error", pa.string()),                       # the error message for quarantined rows
    pa.field("duplicate_of", pa.string()),                # id of the copy kept instead, for duplicates
]

TRANSIENT_FIELDS = [
    pa.field("_uri", pa.string()),          # where the decode stage reads the item from
    pa.field("_media", pa.string()),        # image (a file) | video (a frame of a clip)
    pa.field("_analysis", pa.binary()),     # decoded RGB uint8, reduced size, row-major
    pa.field("_analysis_h", pa.int32()),
    pa.field("_analysis_w", pa.int32()),
]

SPSS_SCHEMA = pa.schema(SPSS_FIELDS)
ROW_SCHEMA = pa.schema(SPSS_FIELDS + TRANSIENT_FIELDS)

# What the listing writes: one row per output row (video frames are listed one
# by one), so every manifest id ends in exactly one of kept/ or rejected/.
MANIFEST_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("frame", pa.int32(), nullable=False),
    pa.field("identity", pa.string()),
    pa.field("gender", pa.string()),
    pa.field("captions", pa.list_(CAPTION)),
    pa.field("_uri", pa.string()),
    pa.field("_media", pa.string()),
    pa.field("status", pa.string()),   # set when the listing itself already knows it is bad
    pa.field("reason", pa.string()),
    pa.field("error", pa.string()),
])


def stable_id(source: str, path: str, frame: int = -1) -> str:
    """A run-independent row id: 96 bits of sha256 over source, path and frame."""
    key = f"{source}\x00{path}\x00{frame}".encode()
    return hashlib.sha256(key).hexdigest()[:24]


def empty_row() -> dict:
    return {f.name: None for f in ROW_SCHEMA}


def to_table(rows: list[dict], schema: pa.Schema = ROW_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def reject(row: dict, reason: str) -> None:
    row["status"], row["reason"] = REJECTED, reason
    drop_analysis(row)


def quarantine(row: dict, reason: str, error: BaseException | str) -> None:
    row["status"], row["reason"] = QUARANTINED, reason
    row["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    drop_analysis(row)


def drop_analysis(row: dict) -> None:
    row["_analysis"] = row["_analysis_h"] = row["_analysis_w"] = None


def analysis_image(row: dict):
    """The decoded RGB analysis image the quality stage handed over (HxWx3 uint8)."""
    import numpy as np

    if row["_analysis"] is None:
        raise ValueError("row has no analysis image (the quality stage must run with keep_analysis)")
    return np.frombuffer(row["_analysis"], np.uint8).reshape(row["_analysis_h"], row["_analysis_w"], 3)


def alive(row: dict) -> bool:
    return row["status"] == ALIVE
