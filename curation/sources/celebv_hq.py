"""CelebV-HQ (Zhu et al., ECCV 2022).

Layout (from the dataset's download script): processed clips are
``<clip_id>.mp4`` files (``<youtube_id>_<n>``) in one folder (the script's
``downloaded_celebvhq/processed/``; any depth under the root is accepted), and
``celebvhq_info.json`` holds per-clip metadata. Every clip is one person, but
the same person across clips is not labelled, so rows carry no identity.
Each clip yields ``frames_per_clip`` evenly spaced frames, one row each.
"""
from __future__ import annotations

from curation.sources.base import VIDEO_EXTS, Source


class CelebVHQSource(Source):
    kind = "celebv_hq"

    def items(self):
        for rel in self.walk_files(exts=VIDEO_EXTS):
            yield from self.clip_rows(rel)
