"""CelebV-Text (Yu et al., CVPR 2023).

Layout: clips ``<clip_id>.mp4`` anywhere under the root (the download script's
output folder), and the text descriptions unpacked beside them under ``texts/``
(config ``texts_dir``), one folder per attribute download (general/detailed
appearance, emotion, action, light direction, intensity, colour temperature),
each holding ``<clip_id>.txt`` with one description per line. The folder names
inside ``texts/`` are not assumed: every sub-folder is read. Every distinct
line becomes a ``dataset`` caption of every frame of that clip. No identity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from curation.sources.base import VIDEO_EXTS, Source


@dataclass(frozen=True)
class CelebVTextOptions:
    texts_dir: str   # the descriptions' folder under the root


class CelebVTextSource(Source):
    kind = "celebv_text"
    Options = CelebVTextOptions

    def items(self):
        texts = self.root / self.opts.texts_dir
        cats = sorted(p for p in texts.iterdir() if p.is_dir()) if texts.is_dir() else []
        if not cats:
            self.errors.append(f"no description folders under {texts}: frames get no dataset captions")
        for rel in self.walk_files(exts=VIDEO_EXTS):
            if texts in (self.root / rel).parents:
                continue
            clip = os.path.splitext(os.path.basename(rel))[0]
            yield from self.clip_rows(rel, captions=self._captions(cats, clip))

    def _captions(self, cats, clip: str) -> list[str]:
        seen: dict[str, None] = {}
        for c in cats:
            p = c / f"{clip}.txt"
            if p.is_file():
                for ln in p.read_text(encoding="utf-8", errors="replace").splitlines():
                    if ln.strip():
                        seen.setdefault(ln.strip(), None)
        return list(seen)
