"""How long `infu report` takes on a large curate output, next to reading the columns it needs whole.

Builds a synthetic curate output laid out like the real one (SPSS schema, ~256 rows per Parquet
file, real JPEG bytes in every row, 60 % kept over five buckets, rejects over ten reasons, one of
them rare, duplicates in dup-* files with their kept originals) and times:

- report: ``write_report`` (samples thumbnails file by file, counts from stats.json);
- full column read: the reason and bucket columns of every file (what a report that counts
  from the data itself would read at the least).

    python bench/report.py --rows 500000 [--dir /tmp/report-bench] [--screenshot runs/pipeline PNG]

``--screenshot ROOT PNG`` instead renders ROOT/report.html in headless Chromium to PNG (the
README's picture comes from `runs/pipeline` after scripts/demo.sh).
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation import samples  # noqa: E402
from curation.registry import spss_schema  # noqa: E402
from pipelines.report import write_report  # noqa: E402

REASONS = {"decode_error": 0.01, "low_resolution": 0.06, "blurry": 0.05, "bad_aspect": 0.02, "no_face": 0.08,
           "multiple_faces": 0.07, "small_face": 0.05, "watermark": 0.03, "nsfw": 0.0001}
DUPLICATES = 0.03
BUCKETS = ["864x1152", "1024x1024", "768x1344", "1152x864", "896x1152"]
ROWS_PER_FILE = 256


def jpeg() -> bytes:
    buf = io.BytesIO()
    samples.astronaut().resize((48, 48)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def build(out: Path, rows: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = jpeg()
    names = list(REASONS)
    p = np.array([REASONS[r] for r in names] + [DUPLICATES])
    p = np.append(p, 1 - p.sum())                       # the rest is kept
    pick = rng.choice(len(p), size=rows, p=p)
    by_reason, by_bucket = {}, {}
    kept_ids = []
    for folder in ("kept", "rejected"):
        (out / folder).mkdir(parents=True)

    def write(folder, prefix, part, ids, status, reasons, buckets, dup_of=None):
        n = len(ids)
        cols = {f.name: pa.nulls(n, f.type) for f in spss_schema()}
        cols.update(id=pa.array(ids), source=pa.array(["bench"] * n), path=pa.array([f"{i}.jpg" for i in ids]),
                    frame=pa.array([-1] * n, pa.int32()), image=pa.array([image] * n, pa.binary()),
                    status=pa.array([status] * n), reason=pa.array(reasons, pa.string()),
                    bucket=pa.array(buckets, pa.string()), width=pa.array([48] * n, pa.int32()),
                    height=pa.array([48] * n, pa.int32()), face_count=pa.array([1] * n, pa.int32()))
        if dup_of is not None:
            cols["duplicate_of"] = pa.array(dup_of, pa.string())
        pq.write_table(pa.table(cols, schema=spss_schema()), out / folder / f"{prefix}-{part:07d}.parquet",
                       compression={f.name: "none" if f.name == "image" else "zstd" for f in spss_schema()})

    for start in range(0, rows, ROWS_PER_FILE):
        chunk = pick[start:start + ROWS_PER_FILE]
        ids = [f"{start + i:012d}" for i in range(len(chunk))]
        kept = [i for i, c in enumerate(chunk) if c == len(p) - 1]
        rej = [i for i, c in enumerate(chunk) if c < len(names)]
        buckets = [BUCKETS[int(rng.integers(len(BUCKETS)))] for _ in kept]
        write("kept", "part", start, [ids[i] for i in kept], "kept", [None] * len(kept), buckets)
        kept_ids += [ids[i] for i in kept]
        for b in buckets:
            by_bucket[b] = by_bucket.get(b, 0) + 1
        if rej:
            reasons = [names[chunk[i]] for i in rej]
            write("rejected", "part", start, [ids[i] for i in rej], "rejected", reasons, [None] * len(rej))
            for r in reasons:
                by_reason[r] = by_reason.get(r, 0) + 1
        dups = [i for i, c in enumerate(chunk) if c == len(names)]
        if dups:
            of = [kept_ids[int(rng.integers(len(kept_ids)))] if kept_ids else None for _ in dups]
            write("rejected", "dup", start, [ids[i] for i in dups], "rejected", ["duplicate"] * len(dups),
                  [None] * len(dups), of)
            by_reason["duplicate"] = by_reason.get("duplicate", 0) + len(dups)
    kept_n = int((pick == len(p) - 1).sum())
    stats = {"inputs": rows, "kept": kept_n, "rejected": rows - kept_n, "quarantined": 0, "adds_up": True,
             "by_reason": dict(sorted(by_reason.items())), "by_bucket": by_bucket,
             "by_source": {"bench": {"inputs": rows, "kept": kept_n, "rejected": by_reason, "quarantined": {}}},
             "stages": {"quality": {"ran": True}, "faces": {"ran": True}, "nsfw": {"ran": True},
                        "watermark": {"ran": True}, "dedup": {"ran": True}}, "elapsed_s": 0}
    (out / "stats.json").write_text(json.dumps(stats))
    return stats


def screenshot(root: Path, png: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from browser import Page

    report = write_report(root)
    with Page(report.resolve().as_uri(), width=1280, height=1500) as page:
        page.screenshot(png)
        print(f"{png}: {report} in Chromium, console errors: {page.errors or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--dir", default="/tmp/report-bench")
    ap.add_argument("--screenshot", nargs=2, metavar=("ROOT", "PNG"))
    a = ap.parse_args()
    if a.screenshot:
        return screenshot(Path(a.screenshot[0]), Path(a.screenshot[1]))
    out = Path(a.dir)
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    build(out, a.rows)
    files = sorted(out.rglob("*.parquet"))
    size = sum(f.stat().st_size for f in files) / 2**30
    print(f"built {a.rows} rows in {len(files)} files ({size:.2f} GiB) in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    page = write_report(out)
    report_s = time.perf_counter() - t
    t = time.perf_counter()
    n = pads.dataset([str(f) for f in files], format="parquet").to_table(columns=["reason", "bucket"]).num_rows
    full_s = time.perf_counter() - t
    print(f"report: {report_s:.2f} s ({page.stat().st_size / 2**20:.1f} MiB page)   "
          f"full read of reason+bucket: {full_s:.2f} s ({n} rows)   report / full read: {report_s / full_s:.2f}")


if __name__ == "__main__":
    main()
