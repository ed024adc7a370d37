"""The model-backed curation stages by the name ``configs/curate.yaml: stages`` uses.

A plain table of names to ``module:Class``, imported when a config names the stage (the modules
load model code). Adding a stage is its own file plus one line here."""
from __future__ import annotations

import importlib

from curation.stage import Stage

STAGES = {
    "faces": "curation.faces:FaceStage",
    "nsfw": "curation.nsfw:NSFWStage",
    "watermark": "curation.watermark:WatermarkStage",
    "caption": "curation.caption_stage:CaptionStage",
}


def stage_class(name: str) -> type[Stage]:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)
