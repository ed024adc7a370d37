"""MillionCelebs (Zhang et al., CVPR 2020).

Assumed layout (not confirmed from a public listing): one folder per identity,
named by its Freebase-style id (``m.0abc12``), holding that person's images,
possibly below one or more split/part folders: ``ROOT/**/<identity>/<image>``.
The identity is the image's parent folder name. The dataset carries no text.
"""
from __future__ import annotations

import os

from curation.sources.base import Source


class MillionCelebsSource(Source):
    kind = "millioncelebs"

    def items(self):
        for rel_dir, files in self.walk():
            ident = os.path.basename(rel_dir) or None
            for name in files:
                yield self.row(os.path.join(rel_dir, name) if rel_dir else name, identity=ident)
