"""Dataset adapters, one per file. ``SOURCES`` maps the ``--source`` kind to its class."""
from curation.sources.base import IMAGE_EXTS, VIDEO_EXTS, Source, SourceError
from curation.sources.celeba import CelebASource
from curation.sources.celebv_hq import CelebVHQSource
from curation.sources.celebv_text import CelebVTextSource
from curation.sources.cosmicmanhq import CosmicManHQSource
from curation.sources.easyportrait import EasyPortraitSource
from curation.sources.ffhq import FFHQSource
from curation.sources.folder import FolderSource
from curation.sources.millioncelebs import MillionCelebsSource
from curation.sources.vfhq import VFHQSource
from curation.sources.vggface2 import VGGFace2Source

SOURCES: dict[str, type[Source]] = {c.kind: c for c in (
    VGGFace2Source, MillionCelebsSource, CelebASource, CelebVHQSource, FFHQSource,
    VFHQSource, EasyPortraitSource, CelebVTextSource, CosmicManHQSource, FolderSource)}


def make_source(kind: str, label: str, root: str, cfg: dict | None = None) -> Source:
    if kind not in SOURCES:
        raise SourceError(f"unknown source {kind!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[kind](label, root, cfg)


__all__ = ["SOURCES", "IMAGE_EXTS", "VIDEO_EXTS", "Source", "SourceError", "make_source"]
