"""`infu curate` with its images and its output in object storage against the same on local disk, on
this machine, in one run (#34, #46): an S3-compatible server on 127.0.0.1 (moto's, as the tests use)
that answers every request ``--latency-ms`` late (a real store's round trip: 20 ms by default), the
cheap default stages (decode, quality filters, dedup), 800x1000 JPEGs from the sample photos.

    python bench/storage.py --images 300 [--repeat 2] [--latency-ms 20]

Three ways: disk to disk, bucket to disk, bucket to bucket. Prints each run's wall time (the command,
start-up and report included), the job's own phases (stats.json's timings) and the ratios to disk.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.curate import make_images  # noqa: E402
from infu_model.storage import read_bytes  # noqa: E402
from s3_server import S3Server  # noqa: E402

BIN = Path(sys.executable).parent


def curate(src: str, out: str, cfg: Path, env: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    done = subprocess.run([str(BIN / "infu"), "curate", "--source", f"folder:bench={src}", "--out", out,
                           "--config", str(cfg), "--quiet"], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    wall = time.perf_counter() - t
    stats = json.loads(read_bytes(f"{out}/stats.json"))  # (a local path or an object: read_bytes reads both)
    return wall, stats["timings_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each (the best is reported)")
    ap.add_argument("--latency-ms", type=float, default=20, help="added to every request the store answers")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    images = make_images(work, args.images)
    server = S3Server(latency_ms=args.latency_ms)
    try:
        t = time.perf_counter()
        uri = server.upload(images, f"{server.bucket('bench')}/photos")
        print(f"{args.images} images uploaded in {time.perf_counter() - t:.1f} s")
        cfg = work / "c.yaml"
        cfg.write_text("stages: []\nprogress: false\n")
        env = server.run_env()
        os.environ.update(server.env)  # (this process reads the bucket's stats.json)
        ways = {"disk to disk": (str(images), lambda r: str(work / f"disk{r}")),
                "bucket to disk": (uri, lambda r: str(work / f"bucket{r}")),
                "bucket to bucket": (uri, lambda r: f"s3://bench/out{r}")}
        best = {}
        for r in range(args.repeat):
            for name, (src, out) in ways.items():
                wall, phases = curate(src, out(r), cfg, env)
                print(f"  {name:<16} run {r + 1}: {wall:5.1f} s  "
                      + "  ".join(f"{k} {v:.1f}" for k, v in phases.items()), flush=True)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, phases)
        disk = best["disk to disk"][0]
        print(f"\n{args.images} images, {os.cpu_count()} cores, cheap default stages, "
              f"{args.latency_ms:g} ms per request (best of {args.repeat}):")
        for name, (wall, phases) in best.items():
            print(f"  {name:<16} {wall:5.1f} s  {wall / disk:.2f}x disk  ({args.images / wall:.1f} images/s)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
