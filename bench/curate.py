"""Throughput and memory of `infu curate` on this machine, measured side by side in one run on the
same images (800x1000 JPEGs derived from the sample photos):

    python bench/curate.py --sizes 1000 10000       # the spine: read, decode, cheap filters, dedup
    python bench/curate.py --full --sizes 300 2000  # every default stage (dlib faces, nudenet, OCR watermarks)
    python bench/curate.py --full --sizes 300 10000 --modes fused   # memory and spill at 10,000 images
    python bench/curate.py --full --marginal 300 900   # the command's marginal rate and start-up vs the ceiling
    python bench/curate.py --full --marginal 100 300 --watermark ocr   # ... with the OCR opinion alone

- decode-only: read + safe decode in a plain loop (the floor of any pipeline);
- a cost table (``--full``): each stage's seconds per image in one process and its share of the total;
- plain loop: the same stages in one process, one after another (one core);
- the Ray pipeline (embedded Ray, its start-up reported apart): the decode tasks and an actor pool
  per model stage (``execution.mode: pools``) and, with ``--full``, every stage fused in one actor
  per core (``fused``, the default with model stages on CPUs), with the decisions of both compared
  row by row;
- the pipeline's peak memory (PSS summed over the driver and Ray's processes) and the bytes Ray
  spilled to disk, at each size: neither may grow with the number of images.

``--marginal N1 N2`` times the whole command a user runs (``infu curate``, a fresh process each) on N1
and N2 images: the marginal rate (N2 - N1) / (T2 - T1), which leaves start-up out; the start-up,
T1 - N1 / rate; and the ceiling the models' own work sets on these cores (cores / the seconds per image
of the stages in one process, measured on the N1 images), side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
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
from curation.registry import spss_schema  # noqa: E402
from curation.sources import make_source  # noqa: E402
from infu_model.images import LIMITS, decode, read_file  # noqa: E402
from pipelines.jobs import load_config  # noqa: E402
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

    src = make_source("folder", "bench", str(folder), load_config("curate").sources)
    listed = pa.Table.from_pylist(list(src.items()), schema=MANIFEST_SCHEMA)
    return table_to_rows(listed, spss_schema(transient_too=True))


def decode_only(folder: Path) -> float:
    files = sorted(folder.iterdir())
    t = time.perf_counter()
    for f in files:
        decode(read_file(f), LIMITS, max_side=1024)  # what the quality stage asks for by default
    return len(files) / (time.perf_counter() - t)


def plain_loop(folder: Path, cfg) -> tuple[float, dict]:
    """The quality stage and the enabled model stages in one process, then dedup: (images/s, seconds
    per stage)."""
    import pyarrow as pa

    from curation.engine import run_stage

    rows = rows_of(folder)
    stages = [cfg.quality_stage(keep_analysis=True), *[s for s in cfg.stages if s.enabled]]
    for s in stages:
        s.ensure_setup()
    spent = dict.fromkeys([s.name for s in stages] + ["dedup"], 0.0)
    t0 = time.perf_counter()
    for i in range(0, len(rows), 16):
        for s in stages:
            t = time.perf_counter()
            run_stage(s, rows[i:i + 16])
            spent[s.name] += time.perf_counter() - t
    t = time.perf_counter()
    ok = [r for r in rows if r["status"] == "pending"]
    find_duplicates(pa.Table.from_pylist([{k: r[k] for k in ("id", "phash", "width", "height", "blur")} for r in ok]), 4)
    spent["dedup"] = time.perf_counter() - t
    return len(rows) / (time.perf_counter() - t0), spent


def spilled_mib() -> float:
    """MiB Ray spilled to disk since it started (its object store summary)."""
    import re

    from ray._private.internal_api import memory_summary

    found = re.search(r"Spilled (\d+) MiB", memory_summary(stats_only=True))
    return float(found.group(1)) if found else 0.0


def pipeline(folder: Path, out: Path, cfg) -> tuple[float, int, float]:
    """(images/s, peak PSS bytes, MiB spilled) of one run_curate."""
    spilled = spilled_mib()
    with PeakMemory() as mem:
        t = time.perf_counter()
        stats = run_curate([SourceSpec("folder", "bench", str(folder))], out, cfg, overwrite=True, log=lambda m: None)
        dt = time.perf_counter() - t
    assert stats["adds_up"]
    return stats["inputs"] / dt, mem.peak, spilled_mib() - spilled


def decisions(out: Path) -> dict:
    """id -> (status, reason, bucket) of a curate output."""
    import pyarrow.dataset as pads

    files = sorted(str(p) for sub in ("kept", "rejected") for p in (out / sub).glob("*.parquet"))
    t = pads.dataset(files).to_table(columns=["id", "status", "reason", "bucket"])
    return {r["id"]: (r["status"], r["reason"], r["bucket"]) for r in t.to_pylist()}


def command_seconds(folder: Path, out: Path, cfg_file: Path) -> float:
    """Wall seconds of ``infu curate`` on ``folder`` in a fresh process: what a user waits, start-up included.
    Its phases (stats.json ``timings_s``, and what the command spent outside the job) are printed."""
    t = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "infu"), "curate", "--source", f"folder:bench={folder}",
                           "--out", str(out), "--config", str(cfg_file), "--quiet", "--overwrite"],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    wall = time.perf_counter() - t
    stats = json.loads((out / "stats.json").read_text())
    phases = {**stats["timings_s"], "stats": round(stats["elapsed_s"] - sum(stats["timings_s"].values()), 2),
              "outside the job (start, check, report, exit)": round(wall - stats["elapsed_s"], 2)}
    print(f"  {folder.name}: {wall:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    return wall


def stage_overrides(full: bool, watermark: str | None) -> dict:
    """The stages to run: none (the spine), or the default ones, the watermark stage's ``combine`` set."""
    if not full:
        return {"stages": []}
    return {"stages": ["faces", "nsfw", {"name": "watermark", "combine": watermark}]} if watermark else {}


def marginal(work: Path, n1: int, n2: int, full: bool, repeat: int = 1, watermark: str | None = None) -> None:
    cfg_file = work / "marginal.yaml"
    work.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(json.dumps({"progress": False, **stage_overrides(full, watermark)}) + "\n")
    first, second = make_images(work, n1), make_images(work, n2)
    # untimed: the first command on a machine reads the models and Ray from a cold page cache
    command_seconds(make_images(work, 16), work / "marginal0", cfg_file)
    pairs = []  # (T at n1, T at n2), alternated so that a slow spell of the machine hits both sizes
    for _ in range(repeat):
        pairs.append((command_seconds(first, work / "marginal1", cfg_file),
                      command_seconds(second, work / "marginal2", cfg_file)))
    cfg = load_config("curate", overrides={"progress": False, **stage_overrides(full, watermark)})
    _, spent = plain_loop(first, cfg)
    per_image = sum(v for k, v in spent.items() if k != "dedup") / n1
    ceiling = (os.cpu_count() or 1) / per_image
    print(f"\n`infu curate` on 800x1000 JPEGs, {os.cpu_count()} cores, stages: quality"
          + "".join(f", {s.name}" for s in cfg.stages if s.enabled))
    print(f"  ceiling {ceiling:.2f} images/s ({per_image:.3f} s of stage work per image, one process)")
    for t1, t2 in pairs:
        rate = (n2 - n1) / (t2 - t1)
        startup = t1 - n1 / rate
        print(f"  {n1} images: {t1:.1f} s    {n2} images: {t2:.1f} s    marginal rate {rate:.2f} images/s   "
              f"rate / ceiling {rate / ceiling:.2f}   start-up {startup:.1f} s ({startup / t1:.0%} of the {n1}-image run)")
    if repeat > 1:  # the pooled figures: the mean times of each size
        t1, t2 = (sum(t[i] for t in pairs) / repeat for i in (0, 1))
        rate = (n2 - n1) / (t2 - t1)
        print(f"  over the {repeat} pairs (mean times): marginal rate {rate:.2f} images/s   rate / ceiling "
              f"{rate / ceiling:.2f}   start-up {t1 - n1 / rate:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--full", action="store_true", help="every default stage (faces, NSFW, watermarks: OCR and our classifier)")
    ap.add_argument("--modes", nargs="+", choices=["fused", "pools"], default=["fused", "pools"],
                    help="execution modes to run (fused only with --full)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "infu_bench_curate"))
    ap.add_argument("--marginal", type=int, nargs=2, metavar=("N1", "N2"),
                    help="time the whole command on N1 and N2 images: marginal rate, start-up, ceiling")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --marginal: time that many pairs (one pair moves by about 10 %% between runs)")
    ap.add_argument("--watermark", choices=["ocr", "classifier", "any", "none"], default=None,
                    help="with --full: the watermark stage's combine (default: the config's), to compare opinions' cost")
    args = ap.parse_args()
    work = Path(args.workdir)
    if args.marginal:
        return marginal(work, *args.marginal, args.full, args.repeat, args.watermark)
    cfg = load_config("curate", overrides={"progress": False, **stage_overrides(args.full, args.watermark)})
    import ray

    from pipelines.ray_runtime import init_ray

    t = time.perf_counter()
    init_ray(None, cfg.ray, cfg.progress)
    print(f"embedded Ray start: {time.perf_counter() - t:.1f} s (once per run, not in the figures below)")
    first = make_images(work, args.sizes[0])
    pipeline(first, work / "warmup", cfg)  # start the worker processes once
    dec = decode_only(first)
    loop, spent = plain_loop(first, cfg)
    modes = {m: cfg.updated({"execution": {"mode": m}}) for m in args.modes if args.full or m == "pools"}
    results = []
    for n in args.sizes:
        folder = make_images(work, n)
        for mode, c in modes.items():
            rate, peak, spill = pipeline(folder, work / f"out{n}_{mode}", c)
            results.append((n, mode, rate, peak, spill))
        if len(modes) > 1:
            a, b = (decisions(work / f"out{n}_{m}") for m in modes)
            print(f"{n} images: fused and pools decide alike: {a == b} ({sum(a[k] != b.get(k) for k in a)} differ)")
    print(f"\nimages of 800x1000 JPEG, {os.cpu_count()} cores, stages: quality"
          + "".join(f", {s.name}" for s in cfg.stages if s.enabled))
    if args.full:
        total = sum(spent.values())
        print(f"\n{'stage (one process)':<22}{'s/image':>9}{'share':>8}")
        for name, sec in spent.items():
            print(f"{name:<22}{sec / args.sizes[0]:>9.3f}{sec / total:>8.0%}")
    print(f"\n{'method':<30}{'images/s':>10}{'vs loop':>9}")
    print(f"{'decode only (plain loop)':<30}{dec:>10.1f}{dec / loop:>8.2f}x")
    print(f"{'plain loop, same stages':<30}{loop:>10.2f}{1:>8.2f}x")
    for n, mode, rate, _, _ in results:
        print(f"{f'Ray pipeline, {mode} ({n})':<30}{rate:>10.2f}{rate / loop:>8.2f}x")
    print(f"\n{'images':>8}  {'mode':<7}{'images/s':>10}{'peak PSS (MiB)':>16}{'spilled (MiB)':>15}")
    for n, mode, rate, peak, spill in results:
        print(f"{n:>8}  {mode:<7}{rate:>10.2f}{peak / 2**20:>16.0f}{spill:>15.0f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
