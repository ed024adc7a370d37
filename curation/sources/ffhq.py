"""FFHQ (Karras et al., CVPR 2019).

Layout (as distributed): ``ROOT/images1024x1024/<nn000>/<nnnnn>.png`` (folders of
1000), optionally ``in-the-wild-images/`` and ``thumbnails128x128/``, plus
``ffhq-dataset-v2.json``. We read ``images1024x1024`` (config ``subdirs``) and
fall back to every image under the root when none of those folders exists.
Each image is a different person: no identity, no text.
"""
from __future__ import annotations

from dataclasses import dataclass

from curation.sources.base import Source


@dataclass(frozen=True)
class FFHQOptions:
    subdirs: tuple[str, ...]   # the folders read (the full-size images)


class FFHQSource(Source):
    kind = "ffhq"
    Options = FFHQOptions

    def items(self):
        subdirs = [self.root / d for d in self.opts.subdirs if (self.root / d).is_dir()]
        for top in subdirs or [self.root]:
            for rel in self.walk_files(top):
                yield self.row(rel)
