"""What every dataset adapter shares: a streaming, deterministic directory walk
and the manifest row it yields per item.

Walks are depth-first with each directory's entries sorted, so two listings of
the same tree give the same order; memory is bounded by the largest single
directory, never by the dataset.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Iterator

from curation.video import even_indices, video_frame_count
from infu_model.images import DecodeError
from infu_model.storage import ObjectPath, listdir, location, missing
from curation.engine import ALIVE, QUARANTINED
from curation.records import stable_id

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})


class SourceError(ValueError):
    """The source as a whole cannot be read (missing root, wrong layout)."""


class Source:
    """One dataset on disk. Subclasses implement ``items``; a kind with options declares them as
    ``Options`` (its block of a curate config's ``sources``)."""

    kind: ClassVar[str] = ""
    Options: ClassVar[type | None] = None

    def __init__(self, label: str, root: str | os.PathLike, frames_per_clip: int, opts=None):
        self.label = label
        self.root = location(root)  # a Path, or an ObjectPath for a URI (s3://...): the same calls
        self.frames_per_clip, self.opts = frames_per_clip, opts
        self.errors: list[str] = []     # directory-level problems, reported in stats
        self.ignored_files = 0          # files that are not images/videos by extension

    def check(self) -> None:
        if not self.root.exists():
            raise SourceError(f"{self.label}: {missing(self.root)}")
        if not self.root.is_dir():
            raise SourceError(f"{self.label}: not a directory: {self.root}")

    def items(self) -> Iterator[dict]:
        raise NotImplementedError

    # -- helpers for subclasses -------------------------------------------------
    def row(self, rel: str, *, identity=None, gender=None, captions=None, frame: int = -1,
            uri: str | None = None, media: str = "image") -> dict:
        return {
            "id": stable_id(self.label, rel, frame), "source": self.label, "path": rel,
            "frame": frame, "identity": identity, "gender": gender,
            "captions": [{"source": "dataset", "text": t} for t in captions or [] if t],
            "_uri": uri or str(self.root / rel), "_media": media,
            "status": ALIVE, "reason": None, "error": None,
        }

    def inside(self, rel: str) -> str | None:
        """A path a dataset's metadata names, relative to the root (a leading ``/`` means the root)
        and normalised, when it stays inside the root; None when it climbs out with ``..``."""
        norm = os.path.normpath(str(rel).replace("\\", "/").lstrip("/"))
        return None if norm in (".", "..") or norm.startswith("../") else norm

    def walk(self, top: Path | None = None, exts=IMAGE_EXTS) -> Iterator[tuple[str, list[str]]]:
        """Yield (relative dir, sorted file names with a wanted extension), depth first. Symlinked
        directories are followed, each real directory once: a link loop ends instead of running forever."""
        top = top or self.root
        if isinstance(top, ObjectPath):
            yield from self._walk_objects(top, exts)
            return
        stack, seen = [top], set()
        while stack:
            d = stack.pop()
            try:
                real = os.stat(d)
            except OSError as e:
                self.errors.append(f"cannot list {d}: {e.strerror or e}")
                continue
            if (real.st_dev, real.st_ino) in seen:
                self.errors.append(f"skipped {d}: a directory already listed (symlink loop or second link)")
                continue
            seen.add((real.st_dev, real.st_ino))
            try:
                with os.scandir(d) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                self.errors.append(f"cannot list {d}: {e.strerror or e}")
                continue
            files, dirs = [], []
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=True):
                        dirs.append(Path(e.path))
                    elif os.path.splitext(e.name)[1].lower() in exts:
                        files.append(e.name)
                    elif not e.name.startswith("."):
                        self.ignored_files += 1
                except OSError as err:
                    self.errors.append(f"cannot stat {e.path}: {err}")
            rel = os.path.relpath(d, self.root)
            yield ("" if rel == "." else rel), files
            stack.extend(reversed(dirs))

    def _walk_objects(self, top: ObjectPath, exts) -> Iterator[tuple[str, list[str]]]:
        """``walk`` over object storage: one listing per prefix (no links there), the same order."""
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                entries = listdir(d.uri)
            except OSError as e:
                self.errors.append(f"cannot list {d}: {e}")
                continue
            files = [n for n, is_dir in entries if not is_dir and os.path.splitext(n)[1].lower() in exts]
            self.ignored_files += sum(1 for n, is_dir in entries
                                      if not is_dir and n not in files and not n.startswith("."))
            rel = d.uri[len(self.root.uri):].strip("/")
            yield rel, files
            stack.extend(reversed([d / n for n, is_dir in entries if is_dir]))

    def walk_files(self, top: Path | None = None, exts=IMAGE_EXTS) -> Iterator[str]:
        for rel_dir, files in self.walk(top, exts):
            for name in files:
                yield os.path.join(rel_dir, name) if rel_dir else name

    def clip_rows(self, rel: str, **meta) -> Iterator[dict]:
        """Rows for ``frames_per_clip`` frames spread evenly over one video clip."""
        uri = str(self.root / rel)
        try:
            n = video_frame_count(uri)
        except DecodeError as e:
            n, err = 0, str(e)
        else:
            err = "clip has no frames"
        idx = even_indices(n, self.frames_per_clip)
        if not idx:
            r = self.row(rel, uri=uri, media="video", **meta)
            r.update(status=QUARANTINED, reason="decode_error", error=err)
            yield r
            return
        for i in idx:
            yield self.row(rel, frame=i, uri=uri, media="video", **meta)

    def find(self, *candidates: str) -> Path | None:
        """The first existing path among ``candidates`` (relative to the root)."""
        for c in candidates:
            p = self.root / c
            if p.exists():
                return p
        return None
