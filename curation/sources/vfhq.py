"""VFHQ (Xie et al., CVPRW 2022).

Layout (as released): one folder per clip of extracted PNG frames, named
``Clip+<youtube_id>+P<person>+C<clip>+F<start>-<end>/<nnnnnnnn>.png``, possibly
below split folders. Frames are real files, so each sampled frame keeps its
original bytes. The identity is ``<youtube_id>+P<person>`` (the same person in
one source video). Each clip yields ``frames_per_clip`` evenly spaced frames;
``path`` is the clip folder and ``frame`` the index in its sorted frame list.
"""
from __future__ import annotations

import os

from curation.video import even_indices
from curation.sources.base import Source


def vfhq_identity(clip_dir: str) -> str | None:
    parts = os.path.basename(clip_dir).split("+")
    if len(parts) >= 3 and parts[0] == "Clip" and parts[2].startswith("P"):
        return f"{parts[1]}+{parts[2]}"
    return None


class VFHQSource(Source):
    kind = "vfhq"

    def items(self):
        for rel_dir, files in self.walk():
            if not files:
                continue
            ident = vfhq_identity(rel_dir)
            for i in even_indices(len(files), self.frames_per_clip):
                uri = str(self.root / rel_dir / files[i])
                yield self.row(rel_dir, identity=ident, frame=i, uri=uri, media="image")
