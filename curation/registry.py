"""The model-backed curation stages by the name ``configs/curate.yaml: stages`` uses.

A plain table of names to ``module:Class``, imported when a config names the stage (the modules
load model code). Adding a stage is its own file plus one line here."""
from __future__ import annotations

import importlib

from curation.options import ConfigError
from curation.stage import Stage

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
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def stage_reasons(name: str) -> tuple[str, ...]:
    """What a curate stage may reject for: the model stages', and the two every run has
    (``quality``, the cheap filters, and ``dedup``, the run-wide near-duplicate pass)."""
    if name == "quality":
        from curation.quality import QualityStage

        return QualityStage.reasons
    if name == "dedup":
        return ("duplicate",)
    return stage_class(name).reasons
