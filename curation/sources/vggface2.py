"""VGGFace2 (Cao et al., FG 2018).

Layout (as distributed): ``ROOT/{train,test}/<class_id>/<nnnn>_<nn>.jpg`` with
class ids like ``n000002``, and ``ROOT/identity_meta.csv`` (also found under
``meta/``) with columns ``Class_ID, Name, Sample_Num, Flag, Gender`` (``f``/``m``;
values are padded with spaces and names quoted). The class id is the identity;
the gender column fills ``gender``. Names are never copied into records.
A root that holds the class folders directly (one split unpacked) works too.
"""
from __future__ import annotations

import csv

from curation.sources.base import Source

_GENDER = {"f": "female", "m": "male"}


class VGGFace2Source(Source):
    kind = "vggface2"

    def items(self):
        genders = self._genders()
        splits = [p for p in (self.root / "train", self.root / "test") if p.is_dir()] or [self.root]
        for split in splits:
            for rel in self.walk_files(split):
                parts = rel.replace("\\", "/").split("/")
                ident = parts[-2] if len(parts) >= 2 else None
                yield self.row(rel, identity=ident, gender=genders.get(ident))

    def _genders(self) -> dict[str, str]:
        meta = self.find("identity_meta.csv", "meta/identity_meta.csv")
        if meta is None:
            return {}
        out = {}
        with meta.open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = [h.strip().lower() for h in next(reader, [])]
            if "class_id" not in header or "gender" not in header:
                self.errors.append(f"{meta}: unexpected header {header}")
                return {}
            ci, gi = header.index("class_id"), header.index("gender")
            for rec in reader:
                if len(rec) > max(ci, gi):
                    g = _GENDER.get(rec[gi].strip().lower())
                    if g:
                        out[rec[ci].strip()] = g
        return out
