"""Where every row job (curate, caption, synth) writes: every row in exactly one Parquet file.

Files are written to a temporary name and renamed, so a crash never leaves a
half-written file; the name is a hash of the ids inside, so a retried write
task replaces its own file instead of duplicating rows. A run holds its folder's
``Lease``: Ray's workers outlive a killed driver by seconds, and a write of the
dead run that lands after a rerun has listed what is done would duplicate rows.
In object storage an object appears whole once written, and the run's seal
(``pipelines/bucket_runs.py``) decides which objects count instead of the lease.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink

from curation.engine import ALIVE
from infu_model.storage import is_uri, write_parquet


IMAGE_COLUMNS = ("image", "target_image")


class Superseded(RuntimeError):
    """Another run took this output folder over: this one's writes are dropped."""


class Lease:
    """A run's claim on its output folder: a file holding the run's id, changed under an exclusive
    lock by the run that takes the folder over and read under a shared one by each write, so a write
    either lands before a rerun lists what is done or is dropped."""

    def __init__(self, path: Path, run_id: str):
        self.path, self.run_id = Path(path), run_id

    @classmethod
    def take(cls, path: Path) -> Lease:
        lease = cls(path, uuid.uuid4().hex)
        lease.path.parent.mkdir(parents=True, exist_ok=True)
        with lease._locked(fcntl.LOCK_EX) as fd:
            os.ftruncate(fd, 0)
            os.pwrite(fd, lease.run_id.encode(), 0)
        return lease

    @classmethod
    def current(cls, path: Path) -> Lease | None:
        """The lease a run's driver took, as its workers (started after it) hold it; None without one."""
        try:
            return cls(path, Path(path).read_text())
        except FileNotFoundError:
            return None

    @contextmanager
    def held(self):
        """While this run still holds the folder (else ``Superseded``)."""
        with self._locked(fcntl.LOCK_SH) as fd:
            holder = os.pread(fd, 64, 0).decode()
            if holder != self.run_id:
                raise Superseded(f"{self.path.parent.parent} was taken over by another run; this one stops writing")
            yield

    def tag(self, name: str) -> str:
        """A file's name as this run writes it (a local folder's needs no run id: the lock decides)."""
        return name

    def counts(self, files: list[str]) -> list[str]:
        """Those of ``files`` that count: every one that landed (a dead run's late write cannot land)."""
        return files

    @contextmanager
    def _locked(self, how: int):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, how)
            yield fd
        finally:
            os.close(fd)  # releases the lock


def write_atomic(table: pa.Table, path, lease=None) -> None:
    """``table`` to ``path`` whole or not at all (and, with a ``lease``, only while the run holds it)."""
    # encoded images do not compress: spend zstd only on the other columns
    codec = {name: ("none" if name in IMAGE_COLUMNS else "zstd") for name in table.column_names}
    if is_uri(path):  # an object is visible whole once written, or not at all
        with holding(lease):
            write_parquet(table, path, compression=codec)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # a dead run's writer may use the name
    pq.write_table(table, tmp, compression=codec)
    try:
        with holding(lease):
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def holding(lease: Lease | None):
    """``lease.held()``, or nothing to hold for a write outside a leased run."""
    return lease.held() if lease is not None else nullcontext()


def content_name(table: pa.Table, prefix: str = "part", key: str = "id") -> str:
    h = hashlib.sha1("\n".join(sorted(table[key].to_pylist())).encode()).hexdigest()[:20]
    return f"{prefix}-{h}.parquet"


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
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
                 schema: pa.Schema, alive_status: str = ALIVE, key: str = "id", image: str = "image",
                 lease: Lease | None = None):
        self.candidates_dir, self.rejected_dir = candidates_dir, rejected_dir  # a Path, or an ObjectPath
        self.rows_per_file = rows_per_file
        self.rejected_images = rejected_images
        self.alive_status = alive_status  # what surviving rows are marked (kept, when no dedup follows)
        self.schema, self.key, self.image = schema, key, image  # the job's written columns
        self.lease = lease

    def named(self, table: pa.Table) -> str:
        name = content_name(table, key=self.key)
        return self.lease.tag(name) if self.lease is not None else name

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> dict:
        tables = [b for b in blocks if b.num_rows]
        if not tables:
            return {"rows": 0}
        table = conform(pa.concat_tables(tables, promote_options="default"), self.schema)
        # rows in key order: a file's bytes follow from its rows (its name already does), not from which
        # block arrived first, so readers that stream in file order (training's ray loader) see one order
        table = table.take(pc.sort_indices(table, [(self.key, "ascending")]))
        live = pc.equal(table["status"], ALIVE)
        good, bad = table.filter(live), table.filter(pc.invert(live))
        if good.num_rows and self.alive_status != ALIVE:
            good = set_status(good, self.alive_status)
        if good.num_rows:
            write_atomic(good, self.candidates_dir / self.named(good), self.lease)
        if bad.num_rows:
            if not self.rejected_images:
                bad = drop_images(bad, self.image)
            write_atomic(bad, self.rejected_dir / self.named(bad), self.lease)
        return {"rows": table.num_rows}
