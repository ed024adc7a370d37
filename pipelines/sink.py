"""Where every row job (curate, caption, synth) writes: every row in exactly one Parquet file.

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


IMAGE_COLUMNS = ("image", "target_image")


def write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # encoded images do not compress: spend zstd only on the other columns
    codec = {name: ("none" if name in IMAGE_COLUMNS else "zstd") for name in table.column_names}
    pq.write_table(table, tmp, compression=codec)
    os.replace(tmp, path)


def content_name(table: pa.Table, prefix: str = "part", key: str = "id") -> str:
    h = hashlib.sha1("\n".join(sorted(table[key].to_pylist())).encode()).hexdigest()[:20]
    return f"{prefix}-{h}.parquet"


def conform(table: pa.Table, schema: pa.Schema = SPSS_SCHEMA) -> pa.Table:
    """The output schema's columns only (transient ``_`` columns dropped), in its order and types."""
    return table.select([f.name for f in schema]).cast(schema)


def set_status(t: pa.Table, status: str, reason: str | None = None) -> pa.Table:
    """Every row's ``status`` (and ``reason``, when given), the columns' fields kept as they are."""
    for name, value in (("status", status), ("reason", reason)):
        if value is not None:
            i = t.schema.get_field_index(name)
            t = t.set_column(i, t.schema.field(i), pa.array([value] * t.num_rows, pa.string()))
    return t


def drop_images(table: pa.Table, column: str = "image") -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, pa.nulls(table.num_rows, pa.binary()))


class RowSink(Datasink):
    """A row job's output: alive rows -> ``candidates_dir`` (dedup decides later, or kept/ when no
    dedup follows); the rest -> ``rejected_dir``. SPSS rows by default, SPMS pairs for synth."""

    def __init__(self, candidates_dir: Path, rejected_dir: Path, rows_per_file: int, rejected_images: bool,
                 alive_status: str = ALIVE, schema: pa.Schema = SPSS_SCHEMA, key: str = "id", image: str = "image"):
        self.candidates_dir, self.rejected_dir = Path(candidates_dir), Path(rejected_dir)
        self.rows_per_file = rows_per_file
        self.rejected_images = rejected_images
        self.alive_status = alive_status  # what surviving rows are marked (kept, when no dedup follows)
        self.schema, self.key, self.image = schema, key, image  # SPSS rows by default; SPMS pairs for synth

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> dict:
        tables = [b for b in blocks if b.num_rows]
        if not tables:
            return {"rows": 0}
        table = conform(pa.concat_tables(tables, promote_options="default"), self.schema)
        live = pc.equal(table["status"], ALIVE)
        good, bad = table.filter(live), table.filter(pc.invert(live))
        if good.num_rows and self.alive_status != ALIVE:
            good = set_status(good, self.alive_status)
        if good.num_rows:
            write_atomic(good, self.candidates_dir / content_name(good, key=self.key))
        if bad.num_rows:
            if not self.rejected_images:
                bad = drop_images(bad, self.image)
            write_atomic(bad, self.rejected_dir / content_name(bad, key=self.key))
        return {"rows": table.num_rows}
