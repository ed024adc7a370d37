"""Where curation rows land: every row in exactly one Parquet file.

Files are written to a temporary name and renamed, so a crash never leaves a
half-written file; the name is a hash of the ids inside, so a retried write
task replaces its own file instead of duplicating rows.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink

from curation.records import ALIVE, SPSS_SCHEMA


def write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # encoded images do not compress: spend zstd only on the other columns
    codec = {name: ("none" if name == "image" else "zstd") for name in table.column_names}
    pq.write_table(table, tmp, compression=codec)
    os.replace(tmp, path)


def content_name(table: pa.Table, prefix: str = "part") -> str:
    h = hashlib.sha1("\n".join(sorted(table["id"].to_pylist())).encode()).hexdigest()[:20]
    return f"{prefix}-{h}.parquet"


def to_spss(table: pa.Table) -> pa.Table:
    return table.select([f.name for f in SPSS_SCHEMA]).cast(SPSS_SCHEMA)


class CurationSink(Datasink):
    """Alive rows -> ``candidates_dir`` (dedup decides later); the rest -> ``rejected_dir``."""

    def __init__(self, candidates_dir: Path, rejected_dir: Path, rows_per_file: int, rejected_images: bool,
                 alive_status: str = ALIVE):
        self.candidates_dir, self.rejected_dir = Path(candidates_dir), Path(rejected_dir)
        self.rows_per_file = rows_per_file
        self.rejected_images = rejected_images
        self.alive_status = alive_status  # what surviving rows are marked (kept, when no dedup follows)

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> dict:
        tables = [b for b in blocks if b.num_rows]
        if not tables:
            return {"rows": 0}
        table = to_spss(pa.concat_tables(tables, promote_options="default"))
        live = pc.equal(table["status"], ALIVE)
        good, bad = table.filter(live), table.filter(pc.invert(live))
        if good.num_rows and self.alive_status != ALIVE:
            good = good.set_column(good.schema.get_field_index("status"), pa.field("status", pa.string(), False),
                                   pa.array([self.alive_status] * good.num_rows, pa.string()))
        if good.num_rows:
            write_atomic(good, self.candidates_dir / content_name(good))
        if bad.num_rows:
            if not self.rejected_images:
                bad = bad.set_column(bad.schema.get_field_index("image"), "image",
                                     pa.nulls(bad.num_rows, pa.binary()))
            write_atomic(bad, self.rejected_dir / content_name(bad))
        return {"rows": table.num_rows}
