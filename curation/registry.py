"""Model-backed curation stages by the name used in ``configs/curate.yaml: stages``."""
from __future__ import annotations

from curation.stage import Stage

STAGES: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    STAGES[cls.name] = cls
    return cls


def stage_class(name: str) -> type[Stage]:
    _load_builtin()
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES)) or 'none'}")
    return STAGES[name]


def _load_builtin() -> None:
    """Import the stage modules so their @register runs (kept lazy: they import models)."""
    import curation.caption_stage  # noqa: F401
    import curation.faces  # noqa: F401
    import curation.nsfw  # noqa: F401
    import curation.watermark  # noqa: F401
