"""Training data loaders: endless micro-batches of Parquet rows, one aspect-ratio bucket each.

Both are pure functions of the seed, so a resumed run streams the same batches and passes
over the ones already trained on (``skip``: this worker's micro-batches, read but not
prepared). Every row carries ``_file``, the stem of the Parquet file it came from (the
encoder cache is sharded by it).

- ``batch_plan`` (``data.loader: plan``): a global per-epoch shuffle of row references, cut
  into micro-batches in one global sequence; each optimizer step takes the next
  ``per_step`` of them and worker r trains its contiguous share. The global batch does not
  depend on the number of workers: N workers take the same optimizer steps as one worker
  accumulating the same global batch. Random access: right for one machine's worth of data.
- ``stream_batches`` (``data.loader: ray``): Ray Data streams this worker's files (a seeded
  file order dealt out by rank) through a seeded local shuffle buffer; sequential reads and
  bounded memory however large the data, but which rows meet in a global batch depends on
  the number of workers.
"""
from __future__ import annotations

import posixpath
import random
from collections import Counter, OrderedDict, defaultdict
from typing import Iterable, Iterator

from infu_model.storage import arrow, parquet_file, read_parquet
from pipelines.faults import TrainingRefused


def bucket_batches(rows: Iterable[dict], batch_size: int, drop_last: bool = False) -> Iterator[list[dict]]:
    """Group rows by their ``bucket`` into batches of one shape each, streaming: a
    batch leaves as soon as its bucket holds ``batch_size`` rows."""
    pending: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        b = pending[row["bucket"]]
        b.append(row)
        if len(b) == batch_size:
            yield b
            pending[row["bucket"]] = []
    if not drop_last:
        for b in pending.values():
            if b:
                yield b


class NotEnoughData(TrainingRefused):
    """The training data cannot form the batches a run needs: training would wait forever."""


def bucket_counts(files: list[str]) -> Counter:
    """Rows per aspect-ratio bucket (only the bucket column is read)."""
    counts = Counter()
    for f in files:
        counts.update(b or "" for b in read_parquet(f, columns=["bucket"])["bucket"].to_pylist())
    return counts


def epoch_batches(counts: Counter, micro: int, where: str) -> int:
    """Micro-batches one epoch holds (a micro-batch is ``micro`` rows of one bucket); data that holds
    none is refused with its buckets named, instead of cycling through epochs forever."""
    n = sum(c // micro for c in counts.values())
    if n == 0:
        buckets = ", ".join(f"{b or '(no bucket)'}: {c}" for b, c in counts.most_common(8))
        raise NotEnoughData(f"{where} holds {sum(counts.values())} rows, and no bucket holds micro_batch_size={micro} "
                            f"of them, so no training batch can form" + (f" (rows per bucket: {buckets})" if counts
                                                                          else ""))
    return n


def row_index(files: list[str]) -> list[tuple[int, int, str]]:
    """(file, row, bucket) for every row: the only columns the batch plan needs."""
    out = []
    for fi, f in enumerate(files):
        for ri, b in enumerate(read_parquet(f, columns=["bucket"])["bucket"].to_pylist()):
            out.append((fi, ri, b or ""))
    return out


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def batch_plan(files: list[str], columns: list[str], micro: int, seed: int, rank: int = 0, world: int = 1,
               skip: int = 0, per_step: int | None = None):
    """``loader: plan``: this worker's micro-batches of the global sequence (see the module doc).
    ``per_step``: micro-batches per optimizer step over all workers (default ``world``)."""
    per_step = per_step or world
    if per_step % world:
        raise ValueError(f"{per_step} micro-batches per step cannot be shared by {world} workers")
    share = per_step // world
    index, reader = row_index(files), RowReader(files, columns)
    epoch_batches(Counter(b for _, _, b in index), micro, "the training data")  # else the loop below never yields
    epoch, k, mine = 0, 0, 0
    while True:
        refs = ({"ref": (f, r), "bucket": b} for f, r, b in (index[i] for i in epoch_order(len(index), seed, epoch)))
        for batch in bucket_batches(refs, micro, drop_last=True):
            if (k % per_step) // share == rank:
                mine += 1
                if mine > skip:
                    yield [reader(ref["ref"]) for ref in batch]
            k += 1
        epoch += 1


def stream_batches(files: list[str], columns: list[str], micro: int, seed: int, rank: int = 0, world: int = 1,
                   skip: int = 0, shuffle_buffer: int = 1000):
    """``loader: ray``: this worker's micro-batches streamed by Ray Data (see the module doc)."""
    import ray
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True
    names = parquet_file(files[0]).schema_arrow.names
    columns = [c for c in columns if c in names]
    epoch, k = 0, 0
    while True:
        order = [files[i] for i in epoch_order(len(files), seed, epoch)]
        mine = order[rank::world] if len(order) >= world else order
        # include_paths adds "path", the file's (it takes the place of a data column of that name)
        fs, paths = arrow(mine)  # local files or objects of one store
        ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=True, num_cpus=0.25).select_columns(columns + ["path"])
        batches = ds.iter_batches(batch_size=64, batch_format="pyarrow", local_shuffle_buffer_size=shuffle_buffer or None,
                                  local_shuffle_seed=seed + epoch)
        rows = (r for b in batches for r in b.to_pylist())
        if len(order) < world:  # fewer files than workers: deal rows instead
            rows = (r for i, r in enumerate(rows) if i % world == rank)
        rows = ({**r, "bucket": r["bucket"] or "", "_file": stem(r.pop("path"))} for r in rows)
        formed = 0
        for batch in bucket_batches(rows, micro, drop_last=True):
            k, formed = k + 1, formed + 1
            if k > skip:
                yield batch
        if not formed:  # this worker's share of an epoch formed no batch: the next would not either
            raise NotEnoughData(f"worker {rank} of {world}: its share of the data ({len(mine)} of {len(files)} files) "
                                f"formed no micro-batch of {micro} rows of one bucket in epoch {epoch}; use fewer "
                                "workers or data.loader: plan")
        epoch += 1


class RowReader:
    """Reads rows by (file, row) with the last few files' tables cached."""

    def __init__(self, files: list[str], columns: list[str], cache: int = 2):
        self.files, self.columns, self.cache = files, columns, OrderedDict()
        self.size = cache

    def __call__(self, ref) -> dict:
        f, r = ref
        if f not in self.cache:
            schema = parquet_file(self.files[f]).schema_arrow.names
            self.cache[f] = read_parquet(self.files[f], columns=[c for c in self.columns if c in schema])
            if len(self.cache) > self.size:
                self.cache.popitem(last=False)
        self.cache.move_to_end(f)
        return {**self.cache[f].slice(r, 1).to_pylist()[0], "_file": stem(self.files[f])}


def stem(path: str) -> str:
    """A Parquet file's name without its suffix (local path or URI): the encoder cache's shard name."""
    return posixpath.splitext(posixpath.basename(str(path)))[0]


def make_loader(name: str, files: list[str], columns: list[str], micro: int, seed: int, rank: int, world: int,
                skip: int, per_step: int, shuffle_buffer: int):
    if name == "plan":
        return batch_plan(files, columns, micro, seed, rank, world, skip=skip, per_step=per_step)
    if name == "ray":
        return stream_batches(files, columns, micro, seed, rank, world, skip=skip, shuffle_buffer=shuffle_buffer)
    raise ValueError(f"data.loader must be 'ray' or 'plan', not {name!r}")
