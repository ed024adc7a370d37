"""`infu curate` reading its images from object storage against the same files on local disk, on this
machine, in one run (#34): an S3-compatible server on 127.0.0.1 (moto's, as the tests use; a real
store adds network latency, which the batched parallel reads are there to hide), the cheap default
stages (decode, quality filters, dedup), 800x1000 JPEGs from the sample photos.

    python bench/storage.py --images 1000 [--repeat 2]

Prints each run's wall time (the command, start-up included) and the bucket / disk ratio.
"""
from __future__ import annotations

import argparse
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
from s3_server import S3Server  # noqa: E402

BIN = Path(sys.executable).parent


def curate(src: str, out: Path, cfg: Path, env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run([str(BIN / "infu"), "curate", "--source", f"folder:bench={src}", "--out", str(out),
                           "--config", str(cfg), "--quiet"], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each (the best is reported)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    images = make_images(work, args.images)
    server = S3Server()
    try:
        t = time.perf_counter()
        uri = server.upload(images, f"{server.bucket('bench')}/photos")
        print(f"{args.images} images uploaded in {time.perf_counter() - t:.1f} s")
        cfg = work / "c.yaml"
        cfg.write_text("stages: []\nprogress: false\n")
        env = server.run_env()
        best = {"disk": [], "bucket": []}
        for r in range(args.repeat):
            for name, src in (("disk", str(images)), ("bucket", uri)):
                best[name].append(curate(src, work / f"{name}{r}", cfg, env))
                print(f"  {name:<6} run {r + 1}: {best[name][-1]:.1f} s", flush=True)
        disk, bucket = min(best["disk"]), min(best["bucket"])
        print(f"\n{args.images} images, {os.cpu_count()} cores, cheap default stages:\n"
              f"  local disk {disk:.1f} s ({args.images / disk:.1f} images/s)\n"
              f"  S3 bucket  {bucket:.1f} s ({args.images / bucket:.1f} images/s)\n"
              f"  bucket / disk: {bucket / disk:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
