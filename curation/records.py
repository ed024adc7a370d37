"""The SPSS record: the columns of every curate output, and the listing's rows.

Each column is declared once, where it is filled: the listing's and the status columns here, each
stage's in its ``writes`` (curation/quality.py, faces.py, nsfw.py, watermark.py, caption_stage.py).
``curation/registry.py`` assembles them into the record (``spss_schema``): the listing's columns,
then each registered stage's in order, then status. Rows carry every column from the start (null
until a stage fills it), so blocks always concatenate; the transient ``_`` columns hand data between
stages (the item's location, the decoded analysis image) and are never written.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

CAPTION = pa.struct([("source", pa.string()), ("text", pa.string())])

LISTED_FIELDS = [  # what the listing knows of an item (curation/sources)
    pa.field("id", pa.string(), nullable=False),          # stable: hash(source, path, frame)
    pa.field("source", pa.string(), nullable=False),      # dataset name as given on the command line
    pa.field("path", pa.string(), nullable=False),        # relative to the source root
    pa.field("frame", pa.int32(), nullable=False),        # frame index in a clip, -1 for stills
    pa.field("identity", pa.string()),                    # dataset's person id, when it has one
    pa.field("gender", pa.string()),                      # dataset's label ("female"/"male"), when it has one
    pa.field("captions", pa.list_(CAPTION)),              # the dataset's own text; captioners add theirs
]

LISTED_TRANSIENT = [
    pa.field("_uri", pa.string()),          # where the decode stage reads the item from
    pa.field("_media", pa.string()),        # image (a file) | video (a frame of a clip)
]

STATUS_FIELDS = [
    pa.field("status", pa.string(), nullable=False),      # kept | rejected | quarantined
    pa.field("reason", pa.string()),                      # stable snake_case code when not kept
    pa.field("error", pa.string()),                       # the error message for quarantined rows
    pa.field("duplicate_of", pa.string()),                # id of the copy kept instead, for duplicates
]

# What the listing writes: one row per output row (video frames are listed one
# by one), so every manifest id ends in exactly one of kept/ or rejected/. Its
# status is set when the listing itself already knows an item is bad.
MANIFEST_SCHEMA = pa.schema([*LISTED_FIELDS, *LISTED_TRANSIENT, *(f.with_nullable(True) for f in STATUS_FIELDS[:3])])


def stable_id(source: str, path: str, frame: int = -1) -> str:
    """A run-independent row id: 96 bits of sha256 over source, path and frame."""
    key = f"{source}\x00{path}\x00{frame}".encode()
    return hashlib.sha256(key).hexdigest()[:24]


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


ANALYSIS = ("_analysis", "_analysis_h", "_analysis_w")  # the quality stage's hand-over (keep_analysis)


def analysis_image(row: dict):
    """The decoded RGB analysis image the quality stage handed over (HxWx3 uint8)."""
    import numpy as np

    if row["_analysis"] is None:
        raise ValueError("row has no analysis image (the quality stage must run with keep_analysis)")
    return np.frombuffer(row["_analysis"], np.uint8).reshape(row["_analysis_h"], row["_analysis_w"], 3)
