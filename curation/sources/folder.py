"""Any directory tree of images.

Options: ``identity_from_dir`` (the parent folder's name is the identity) and
``sidecar_captions`` (``photo.txt`` beside ``photo.jpg`` is its caption, the
kohya/img2dataset convention; on by default).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from curation.sources.base import Source


@dataclass(frozen=True)
class FolderOptions:
    identity_from_dir: bool   # the parent folder's name is the identity
    sidecar_captions: bool    # photo.txt beside photo.jpg is its caption


class FolderSource(Source):
    kind = "folder"
    Options = FolderOptions

    def items(self):
        by_dir, sidecars = self.opts.identity_from_dir, self.opts.sidecar_captions
        for rel_dir, files in self.walk():
            texts = self._texts(rel_dir) if sidecars else set()
            for name in files:
                rel = os.path.join(rel_dir, name) if rel_dir else name
                stem = os.path.splitext(name)[0]
                caption = self._read_text(rel_dir, stem) if stem in texts else None
                ident = os.path.basename(rel_dir) if by_dir and rel_dir else None
                yield self.row(rel, identity=ident, captions=[caption] if caption else None)

    def _texts(self, rel_dir: str) -> set[str]:
        try:
            return {os.path.splitext(p.name)[0] for p in (self.root / rel_dir).iterdir() if p.name.endswith(".txt")}
        except OSError:
            return set()

    def _read_text(self, rel_dir: str, stem: str) -> str | None:
        try:
            return (self.root / rel_dir / f"{stem}.txt").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
