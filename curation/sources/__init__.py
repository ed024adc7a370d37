"""Dataset adapters, one per file. ``SOURCES`` maps the ``--source`` kind to its class."""
from dataclasses import dataclass

from curation.engine import between
from curation.sources.base import IMAGE_EXTS, VIDEO_EXTS, Source, SourceError
from curation.sources.celeba import CelebAOptions, CelebASource
from curation.sources.celebv_hq import CelebVHQSource
from curation.sources.celebv_text import CelebVTextOptions, CelebVTextSource
from curation.sources.cosmicmanhq import CosmicManHQOptions, CosmicManHQSource
from curation.sources.easyportrait import EasyPortraitSource
from curation.sources.ffhq import FFHQOptions, FFHQSource
from curation.sources.folder import FolderOptions, FolderSource
from curation.sources.millioncelebs import MillionCelebsSource
from curation.sources.vfhq import VFHQSource
from curation.sources.vggface2 import VGGFace2Source

SOURCES: dict[str, type[Source]] = {c.kind: c for c in (
    VGGFace2Source, MillionCelebsSource, CelebASource, CelebVHQSource, FFHQSource,
    VFHQSource, EasyPortraitSource, CelebVTextSource, CosmicManHQSource, FolderSource)}


@dataclass(frozen=True)
class SourceDefaults:
    frames_per_clip: int = between(1)   # video datasets: evenly spaced frames per clip, one row each


@dataclass(frozen=True)
class SourcesOptions:
    """A curate config's ``sources`` block: what every kind shares, and each kind's own options."""
    default: SourceDefaults
    folder: FolderOptions
    celeba: CelebAOptions
    ffhq: FFHQOptions
    celebv_text: CelebVTextOptions
    cosmicmanhq: CosmicManHQOptions


def make_source(kind: str, label: str, root: str, opts: SourcesOptions) -> Source:
    if kind not in SOURCES:
        raise SourceError(f"unknown source {kind!r}; known: {', '.join(sorted(SOURCES))}")
    cls = SOURCES[kind]
    return cls(label, root, opts.default.frames_per_clip, getattr(opts, kind) if cls.Options else None)


__all__ = ["SOURCES", "IMAGE_EXTS", "VIDEO_EXTS", "Source", "SourceError", "SourcesOptions", "make_source"]
