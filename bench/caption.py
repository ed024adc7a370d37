"""Caption stage throughput: the Ray Data actor pool (`infu caption`) against a plain
loop over the same rows with the same tiny captioner (BLIP-2 or native InternVL) and model batch (read, caption,
hygiene, write Parquet in both), both with one torch thread (Ray gives an actor of
num_cpus 0.5 one thread). A Ray task carries --ray-batch rows, fed to the model
--batch at a time. The pool's overhead should stay under 15%.

Starting a run costs a fixed few seconds (a fresh actor process imports torch and
loads the model; Ray Data plans the job): the pool is timed at two sizes and its
steady rate is the marginal one, (N2 - N1) / (t2 - t1); the end-to-end rate of the
larger run is printed too.

    python bench/caption.py [--model blip2|internvl] [--rows 1024] [--batch 8] [--ray-batch 32]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from curation import samples  # noqa: E402
from curation.caption_stage import CaptionStage, clean_dataset_captions  # noqa: E402
from curation.engine import ALIVE  # noqa: E402
from curation.records import stable_id, to_table  # noqa: E402
from curation.registry import empty_row
from curation.registry import spss_schema  # noqa: E402
from pipelines.caption import run_caption  # noqa: E402
from pipelines.jobs import load_config  # noqa: E402
from pipelines.ray_stages import table_to_rows  # noqa: E402
from tiny_vlm import make_tiny_blip2, make_tiny_internvl  # noqa: E402

MAKERS = {"blip2": make_tiny_blip2, "internvl": make_tiny_internvl}


def spss(d: Path, n: int) -> Path:
    photos = [samples.jpeg_bytes(p) for p in (samples.astronaut(), samples.grace_hopper(), samples.group())]
    rows = []
    for i in range(n):
        r = {k: v for k, v in empty_row().items() if not k.startswith("_")}
        r.update(id=stable_id("b", f"{i}"), source="b", path=f"{i}.jpg", frame=-1, status="kept",
                 image=photos[i % 3], captions=[])
        rows.append(r)
    (d / "kept").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=spss_schema()), d / "kept" / "part-0.parquet")
    return d


def plain_loop(src: Path, out: Path, stage: CaptionStage, batch: int) -> float:
    t = time.perf_counter()
    stage.setup()
    rows = table_to_rows(pq.read_table(src / "kept" / "part-0.parquet"), spss_schema(transient_too=True))
    for r in rows:
        r["status"] = ALIVE
        clean_dataset_captions(r, stage.opts.max_chars)
    for i in range(0, len(rows), batch):
        stage.process(rows[i:i + batch])
    for r in rows:
        r["status"] = "kept"
    pq.write_table(to_table(rows, spss_schema(transient_too=True)).select([f.name for f in spss_schema()]), out)
    return len(rows) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(MAKERS), default="blip2", help="which captioner (tiny, random weights)")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="images per generate() call, in both")
    ap.add_argument("--ray-batch", type=int, default=32, help="rows per Ray task (the pool's batch_size)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="infu_bench_caption_"))
    model = MAKERS[args.model](work / args.model)
    src = spss(work / "in", args.rows)
    cfg = load_config("caption", overrides={"progress": False, "captioners": [
        {"backend": args.model, "model": str(model), "max_new_tokens": 20, "generate_batch": args.batch,
         "resources": {"num_cpus": 0.5, "batch_size": args.ray_batch, "concurrency": 1}}]})
    from pipelines.ray_runtime import init_ray

    init_ray(None, cfg.ray, cfg.progress)
    run_caption(spss(work / "warm", args.batch), work / "warm_out", cfg, log=lambda m: None)  # start workers
    import torch

    torch.set_num_threads(1)
    loop = plain_loop(src, work / "loop.parquet", cfg.stages()[0], args.batch)
    times = {}
    for n, d in ((args.rows // 4, spss(work / "small", args.rows // 4)), (args.rows, src)):
        t = time.perf_counter()
        run_caption(d, work / f"out{n}", cfg, log=lambda m: None)
        times[n] = time.perf_counter() - t
    (n1, t1), (n2, t2) = sorted(times.items())
    steady, e2e = (n2 - n1) / (t2 - t1), n2 / t2
    print(f"tiny {args.model}, {args.batch} images per generate call ({args.ray_batch} rows per Ray task), "
          "one actor vs one process, one torch thread each")
    print(f"{'method':<44}{'rows/s':>8}{'vs loop':>9}")
    print(f"{'plain loop':<44}{loop:>8.1f}{1:>8.2f}x")
    print(f"{'actor pool, steady (marginal ' + str(n1) + '->' + str(n2) + ' rows)':<44}{steady:>8.1f}{steady / loop:>8.2f}x")
    print(f"{'actor pool, end to end (' + str(n2) + ' rows)':<44}{e2e:>8.1f}{e2e / loop:>8.2f}x")
    print(f"steady overhead: {100 * (1 - steady / loop):.0f}%  (fixed start-up per run: {t2 - n2 / steady:.1f} s)")


if __name__ == "__main__":
    main()
