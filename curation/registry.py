"""The model-backed curation stages by the name ``configs/curate.yaml: stages`` uses, and the SPSS
record they make.

A plain table of names to ``module:Class``. Adding a stage is its own file (its options, reasons,
the columns it reads and writes), one line here and its block in ``configs/curate.yaml``: its
columns then join the record, the Parquet, ``stats.json`` and the report."""
from __future__ import annotations

import importlib

import pyarrow as pa

from curation.engine import ConfigError, Stage, chain_schema, transient
from curation.records import LISTED_FIELDS, LISTED_TRANSIENT, STATUS_FIELDS

STAGES = {
    "faces": "curation.faces:FaceStage",
    "nsfw": "curation.nsfw:NSFWStage",
    "watermark": "curation.watermark:WatermarkStage",
    "caption": "curation.caption_stage:CaptionStage",
}


class NamedStage:
    """The type of a curate config's ``stages`` entries: each block builds the stage its ``name`` names."""

    @classmethod
    def from_block(cls, block, where: str) -> Stage:
        name = block.get("name") if isinstance(block, dict) else None
        if name not in STAGES:
            raise ConfigError(f"{where}: unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
        return stage_class(name).from_block(block, f"{where} ({name})")


def stage_class(name: str) -> type[Stage]:
    if name == "quality":
        from curation.quality import QualityStage

        return QualityStage
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def stage_reasons(name: str) -> tuple[str, ...]:
    """What a curate stage may reject for: the model stages', and the two every run has
    (``quality``, the cheap filters, and ``dedup``, the run-wide near-duplicate pass)."""
    return ("duplicate",) if name == "dedup" else stage_class(name).reasons


def stage_classes() -> list[type[Stage]]:
    """The quality stage, then every registered stage, in order: what makes the record."""
    return [stage_class(n) for n in ["quality", *STAGES]]


def stage_of(reason: str) -> type[Stage] | None:
    """The curate stage that may reject for ``reason`` (None for dedup's, a listing's or an unknown one)."""
    return next((s for s in stage_classes() if reason in s.reasons), None)


def row_schema(stages) -> pa.Schema:
    """The rows of a curate job running ``stages`` (the quality stage first), checked as a chain: the
    listing's columns, each stage's, then status (transient columns included)."""
    return chain_schema(list(stages), [*LISTED_FIELDS, *LISTED_TRANSIENT], STATUS_FIELDS)


def spss_schema(transient_too: bool = False) -> pa.Schema:
    """The SPSS record: what every curate output holds whatever its config (a stage that did not run
    leaves its columns null), built from the quality stage and every registered stage."""
    schema = row_schema(stage_classes())
    return schema if transient_too else written(schema)


def empty_row() -> dict:
    """A row with every column of the record (transient ones too), all null."""
    return {f.name: None for f in spss_schema(transient_too=True)}


def written(schema: pa.Schema) -> pa.Schema:
    """``schema`` without its transient (hand-over) columns: what reaches the Parquet."""
    return pa.schema([f for f in schema if not transient(f.name)])


def scores() -> list[str]:
    """Every registered stage's score columns, in order (the report's and the stats' evidence)."""
    return list(dict.fromkeys(c for s in stage_classes() for c in s.scores))
