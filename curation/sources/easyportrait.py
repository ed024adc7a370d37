"""EasyPortrait (Kapitanov et al., 2023).

Layout (from the dataset's README): ``ROOT/images/{train,val,test}/<attachment_id>.jpg``
and ``ROOT/annotations/{train,val,test}/*.png`` (segmentation masks, not read),
with meta-information in ``annotations/meta.zip``, unpacked to ``meta.csv``
(columns ``attachment_id, user_id, data_hash, width, height, brightness, train,
test, valid``). ``user_id`` is the identity (the splits are by user). We look for
``meta.csv`` at the root, in ``annotations/`` and in ``annotations/meta/``.
"""
from __future__ import annotations

import csv
import os

from curation.sources.base import Source


class EasyPortraitSource(Source):
    kind = "easyportrait"

    def items(self):
        users = self._users()
        top = self.root / "images" if (self.root / "images").is_dir() else self.root
        for rel in self.walk_files(top):
            stem = os.path.splitext(os.path.basename(rel))[0]
            yield self.row(rel, identity=users.get(stem))

    def _users(self) -> dict[str, str]:
        meta = self.find("meta.csv", "annotations/meta.csv", "annotations/meta/meta.csv")
        if meta is None:
            self.errors.append("meta.csv not found: rows have no identity")
            return {}
        with meta.open(newline="", encoding="utf-8", errors="replace") as f:
            return {r["attachment_id"]: r["user_id"] for r in csv.DictReader(f)
                    if r.get("attachment_id") and r.get("user_id")}
