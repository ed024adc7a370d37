"""Training data loaders: rows/s and peak memory of one epoch of micro-batches.

`loader: ray` (Ray Data streams each worker's files in a seeded order through a seeded
shuffle buffer) against `loader: plan` (a global shuffle of row references, read by
random access with a two-file cache), over the same SPSS Parquet: N rows of real
photos in F files, as curation writes them. Only reading and bucketing are timed
(sample preparation is the same function in both).

    python bench/loader.py [--rows 4000] [--files 40]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from curation import samples  # noqa: E402
from curation.records import stable_id  # noqa: E402
from curation.registry import empty_row
from curation.registry import spss_schema  # noqa: E402


def write(d: Path, rows: int, files: int) -> list[str]:
    photos = [samples.jpeg_bytes(p) for p in (samples.astronaut(), samples.grace_hopper(), samples.group())]
    per = rows // files
    out = []
    for f in range(files):
        recs = []
        for i in range(f * per, (f + 1) * per):
            r = {k: v for k, v in empty_row().items() if not k.startswith("_")}
            r.update(id=stable_id("b", str(i)), source="b", path=f"{i}.jpg", frame=-1, status="kept",
                     image=photos[i % 3], bucket=["1024x1024", "896x1152", "1152x896"][i % 3],
                     id_embedding=[0.0] * 128, captions=[{"source": "dataset", "text": f"photo {i}"}])
            recs.append(r)
        out.append(str(d / f"part-{f:04d}.parquet"))
        pq.write_table(pa.Table.from_pylist(recs, schema=spss_schema()), out[-1])
    return out


def epoch(loader, files, rows: int, micro: int) -> float:
    cols = ["image", "kps", "id_embedding", "captions", "bucket", "id", "id_backend"]
    it = loader(files, cols, micro, seed=0)
    t = time.perf_counter()
    n = 0
    while n < rows - 3 * micro:  # one epoch (a few rows stay in partial buckets)
        n += len(next(it))
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--micro", type=int, default=4)
    args = ap.parse_args()
    from pipelines.job import RayOptions
    from pipelines.ray_runtime import init_ray
    from pipelines.train import batch_plan, stream_batches

    files = write(Path(tempfile.mkdtemp(prefix="infu_bench_loader_")), args.rows, args.files)
    init_ray(None, RayOptions(num_cpus=2, object_store_memory=None, reserve_per_operator=False))
    ray_rate = epoch(stream_batches, files, args.rows, args.micro)
    plan_rate = epoch(batch_plan, files, args.rows, args.micro)
    print(f"{args.rows} rows in {args.files} files, micro-batch {args.micro}, 2 cores")
    print(f"{'loader':<34}{'rows/s':>9}{'ratio':>8}")
    print(f"{'plan (random access, global shuffle)':<34}{plan_rate:>9.0f}{1:>8.2f}")
    print(f"{'ray (streamed, shuffle buffer)':<34}{ray_rate:>9.0f}{ray_rate / plan_rate:>8.2f}")


if __name__ == "__main__":
    main()
