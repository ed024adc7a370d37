"""CosmicManHQ-1.0 (Li et al., CVPR 2024).

Layout: the dataset card says the annotations are Parquet files in ``label/``
(human parsing in ``LAION-5B-Pasing/``); the images themselves come from
LAION-5B and are fetched by the user. Assumed (not confirmed): each annotation
row names its image by a relative path column and carries a caption column.
Column names are auto-detected from common spellings (``img_path``,
``image_path``, ``path``, ``file_name`` / ``caption``, ``text``, ``prompt``) or
set in the config (``path_column``, ``caption_column``). Annotations are read in
record batches, never whole. A row whose image is missing becomes a
quarantined ``missing_file`` row; one whose path leads outside the dataset root (absolute, or
climbing out with ``..``) an ``outside_root`` row, and the file is never read.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow.parquet as pq

from curation.engine import QUARANTINED
from curation.sources.base import Source

_PATH_COLS = ("img_path", "image_path", "path", "file_name", "filename", "image")
_TEXT_COLS = ("caption", "text", "prompt", "description", "dense_caption")


@dataclass(frozen=True)
class CosmicManHQOptions:
    labels_dir: str               # the annotation Parquet files' folder under the root
    path_column: str | None       # null: auto-detected
    caption_column: str | None


class CosmicManHQSource(Source):
    kind = "cosmicmanhq"
    Options = CosmicManHQOptions

    def items(self):
        labels = self.root / self.opts.labels_dir
        files = sorted(labels.rglob("*.parquet")) if labels.is_dir() else []
        if not files:
            self.errors.append(f"no annotation parquet under {labels}")
            return
        for f in files:
            yield from self._rows(f)

    def _rows(self, path):
        with path.open("rb") as f:  # a file on disk, or an object read once
            yield from self._read(path, pq.ParquetFile(f))

    def _read(self, path, pf):
        names = pf.schema_arrow.names
        pcol = self.opts.path_column or next((c for c in _PATH_COLS if c in names), None)
        tcol = self.opts.caption_column or next((c for c in _TEXT_COLS if c in names), None)
        if pcol is None:
            self.errors.append(f"{path.name}: no image path column among {names}")
            return
        for batch in pf.iter_batches(batch_size=4096, columns=[c for c in (pcol, tcol) if c]):
            d = batch.to_pydict()
            for rel, text in zip(d[pcol], d[tcol] if tcol else [None] * batch.num_rows):
                if not rel:
                    continue
                safe = self.inside(rel)
                row = self.row(safe or str(rel), captions=[str(text).strip()] if text else None)
                if safe is None:
                    row.update(_uri=None, status=QUARANTINED, reason="outside_root",
                               error=f"path {rel!r} leads outside the dataset root {self.root}: not read")
                elif not (self.root / safe).is_file():
                    row.update(status=QUARANTINED, reason="missing_file", error=f"not found: {self.root / safe}")
                yield row
