"""Throughput and memory of `infu curate` on this machine.

Prints, measured side by side in one run on the same images:
- decode-only: read + safe decode in a plain loop (the floor of any pipeline),
- plain loop: the same stages (quality + dedup) in one process,
- Ray pipeline: run_curate on embedded Ray (Ray start-up reported apart),
and the pipeline's peak memory (PSS summed over driver and Ray processes) at
two dataset sizes, which must not grow with the number of images.

    python bench/curate.py --sizes 1000 10000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import psutil  # noqa: E402  (ships with ray)

from curation import samples  # noqa: E402
from curation.dedup import find_duplicates  # noqa: E402
from curation.sources import make_source  # noqa: E402
from infu_model.images import LIMITS, decode, read_file  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.curate import run_curate  # noqa: E402
from pipelines.job import SourceSpec  # noqa: E402
from pipelines.ray_stages import table_to_rows  # noqa: E402


def make_images(root: Path, n: int) -> Path:
    d = root / f"imgs{n}"
    if d.exists() and len(list(d.iterdir())) >= n:
        return d
    d.mkdir(parents=True, exist_ok=True)
    bases = [samples.astronaut(), samples.grace_hopper(), samples.group()]
    for i in range(n):
        b = bases[i % 3]
        w, h = b.size
        s = 0.55 + 0.4 * ((i * 7919) % 100) / 100
        cw, ch = int(w * s), int(h * s)
        x, y = (i * 31) % (w - cw + 1), (i * 17) % (h - ch + 1)
        im = b.crop((x, y, x + cw, y + ch)).resize((800, 1000))
        (d / f"{i:06d}.jpg").write_bytes(samples.jpeg_bytes(im, quality=90))
    return d


class PeakMemory:
    """Peak of the summed PSS of this process and all its descendants (Ray included)."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        me = psutil.Process()
        while not self._stop.wait(0.2):
            total = 0
            for p in [me] + me.children(recursive=True):
                try:
                    total += p.memory_full_info().pss
                except (psutil.Error, OSError):
                    pass
            self.peak = max(self.peak, total)

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def rows_of(folder: Path) -> list[dict]:
    import pyarrow as pa

    from curation.records import MANIFEST_SCHEMA

    src = make_source("folder", "bench", str(folder))
    return table_to_rows(pa.Table.from_pylist(list(src.items()), schema=MANIFEST_SCHEMA))


def decode_only(folder: Path) -> float:
    files = sorted(folder.iterdir())
    t = time.perf_counter()
    for f in files:
        decode(read_file(f), LIMITS, max_side=1024)  # what the quality stage asks for by default
    return len(files) / (time.perf_counter() - t)


def plain_loop(folder: Path, cfg) -> float:
    import pyarrow as pa

    t = time.perf_counter()
    rows = rows_of(folder)
    stage = cfg.quality_stage()
    for i in range(0, len(rows), 32):
        stage.process(rows[i:i + 32])
    ok = [r for r in rows if r["status"] == "pending"]
    find_duplicates(pa.Table.from_pylist([{k: r[k] for k in ("id", "phash", "width", "height", "blur")} for r in ok]), 4)
    return len(rows) / (time.perf_counter() - t)


def pipeline(folder: Path, out: Path, cfg) -> tuple[float, int]:
    with PeakMemory() as mem:
        t = time.perf_counter()
        stats = run_curate([SourceSpec("folder", "bench", str(folder))], out, cfg, overwrite=True, log=lambda m: None)
        dt = time.perf_counter() - t
    assert stats["adds_up"]
    return stats["inputs"] / dt, mem.peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "infu_bench_curate"))
    args = ap.parse_args()
    work = Path(args.workdir)
    # the spine alone (read, decode, cheap filters, dedup); the face stage has bench/faces.py
    cfg = load_config("curate", overrides={"progress": False, "stages": []})
    import ray

    from pipelines.ray_runtime import init_ray

    t = time.perf_counter()
    init_ray(None, cfg.ray, cfg.progress)
    print(f"embedded Ray start: {time.perf_counter() - t:.1f} s (once per run, not in the figures below)")
    first = make_images(work, args.sizes[0])
    pipeline(first, work / "warmup", cfg)  # start the worker processes once
    dec = decode_only(first)
    loop = plain_loop(first, cfg)
    results = []
    for n in args.sizes:
        rate, peak = pipeline(make_images(work, n), work / f"out{n}", cfg)
        results.append((n, rate, peak))
    n0, r0, _ = results[0]
    print(f"\nimages of 800x1000 JPEG, {os.cpu_count()} cores")
    print(f"{'method':<28}{'images/s':>10}{'vs loop':>9}")
    print(f"{'decode only (plain loop)':<28}{dec:>10.1f}{dec / loop:>8.2f}x")
    print(f"{'plain loop, same stages':<28}{loop:>10.1f}{1:>8.2f}x")
    print(f"{f'Ray pipeline ({n0} images)':<28}{r0:>10.1f}{r0 / loop:>8.2f}x")
    print(f"\n{'images':>8}{'images/s':>10}{'peak PSS (MiB)':>16}")
    for n, rate, peak in results:
        print(f"{n:>8}{rate:>10.1f}{peak / 2**20:>16.0f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
