"""SPMS synthesis throughput.

CPU mode (default): `infu synth`'s Ray Data pipeline (plan -> InfU actor pool -> ID
filter -> Parquet) against a plain loop doing the same work with the same tiny InfU,
image size, steps and batch size (plan, generate, filter, write Parquet), both with
one torch thread. The pool is timed at two sizes and its steady rate is the marginal
one, (N2 - N1) / (t2 - t1), since starting a run (actor start, model load, planning)
is a fixed cost; the overhead should stay under 15%.

--full-size (GPU): real-size FLUX.1-dev transformer + InfuseNet with random bf16 weights
and a real-size VAE decoder: seconds per 1024x1024 target at 30 steps, and pairs per
GPU-hour (before the ID filter's acceptance rate).

    python bench/synth.py [--sources 8] [--steps 4] [--full-size]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402


def spss(d: Path, n: int) -> Path:
    from curation import samples
    from curation.records import stable_id
    from curation.registry import spss_schema
    from test_synth import spss_row

    base = [spss_row(samples.grace_hopper(), "g.png", gender="female"), spss_row(samples.astronaut(), "a.png")]
    rows = [{**base[i % 2], "id": stable_id("bench", str(i)), "path": f"{i}.png"} for i in range(n)]
    (d / "kept").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=spss_schema()), d / "kept" / "part-0.parquet")
    return d


def plain_loop(src: Path, out: Path, cfg, batch: int) -> tuple[float, int]:
    from curation.engine import run_stage
    from pipelines.sink import conform
    from synth.records import SPMS_SCHEMA, SYNTH_ROW_SCHEMA

    t = time.perf_counter()
    stages = [s for s in cfg.chain() if s.enabled]
    for s in stages:
        s.ensure_setup()
    jobs = cfg.planner().expand(pq.read_table(src / "kept" / "part-0.parquet").to_pylist())
    for i in range(0, len(jobs), batch):
        for s in stages:
            run_stage(s, jobs[i:i + batch])
    pq.write_table(conform(pa.Table.from_pylist(jobs, schema=SYNTH_ROW_SCHEMA), SPMS_SCHEMA), out)
    return len(jobs) / (time.perf_counter() - t), len(jobs)


def cpu_mode(args) -> None:
    from infu_model.tiny import make_tiny
    from pipelines.jobs import load_config
    from pipelines.ray_runtime import init_ray
    from pipelines.synth import run_synth

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="infu_bench_synth_"))
    tiny = make_tiny(work / "tiny")
    cfg = load_config("synth", overrides={
        "progress": False, "ray": {"num_cpus": 2},
        "model": {"base": str(tiny["base"]), "path": str(tiny["infu"]), "dtype": "float32"},
        "generation": {"width": args.side, "height": args.side, "steps": args.steps, "images_per_call": 4,
                       "resources": {"batch_size": args.batch}},
        "prompts": {"per_source": 4, "seeds_per_prompt": 1}})
    small, big = spss(work / "in_small", args.sources // 2), spss(work / "in_big", args.sources)
    loop_rate, n = plain_loop(big, work / "loop.parquet", cfg, args.batch)
    init_ray(None, cfg.ray, cfg.progress)
    times = {}
    for name, src in (("small", small), ("big", big)):
        t = time.perf_counter()
        stats = run_synth(src, work / f"out_{name}", cfg, log=lambda m: None)
        times[name] = (time.perf_counter() - t, stats["pairs"])
    (t1, n1), (t2, n2) = times["small"], times["big"]
    steady = (n2 - n1) / (t2 - t1)
    print(f"tiny InfU, {args.side}x{args.side}, {args.steps} steps, batch {args.batch}, {n} pairs, 2 cores")
    print(f"{'':<28}{'pairs/s':>9}{'vs loop':>9}")
    print(f"{'plain loop':<28}{loop_rate:>9.2f}{1:>9.2f}")
    print(f"{'Ray pool, steady (marginal)':<28}{steady:>9.2f}{steady / loop_rate:>9.2f}")
    print(f"{'Ray pool, end to end':<28}{n2 / t2:>9.2f}{n2 / t2 / loop_rate:>9.2f}")
    print(f"pool overhead (steady): {100 * (1 - steady / loop_rate):.0f}%  (run start: {t2 - n2 / steady:.1f} s)")


@torch.no_grad()
def full_mode(args) -> None:
    from diffusers import AutoencoderKL
    from infer import models

    from infu_model.infusenet import infusenet_residuals

    dev, dt, side, steps = "cuda", torch.bfloat16, 1024, 30
    torch.manual_seed(0)
    base, net, cfg = models(True, dev, dt)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False).to(dev, dt).eval()
    n_tok, grid = (side // 16) ** 2, side // 16
    lat = torch.randn(1, n_tok, 64, device=dev, dtype=dt)
    ids = torch.zeros(n_tok, 3, device=dev)
    ids[:, 1], ids[:, 2] = torch.arange(n_tok, device=dev) // grid, torch.arange(n_tok, device=dev) % grid
    kw = dict(pooled=torch.randn(1, 768, device=dev, dtype=dt), timestep=torch.full([1], 0.5, device=dev, dtype=dt),
              img_ids=ids, scale=1.0, guidance=torch.ones(1, device=dev))
    text = torch.randn(1, 512, 4096, device=dev, dtype=dt)
    id_tokens = torch.randn(1, 8, 4096, device=dev, dtype=dt)

    def image():
        x = lat
        for _ in range(steps):
            d, s = infusenet_residuals(net, latents=x, control=lat, id_tokens=id_tokens, **kw)
            x = base(hidden_states=x, timestep=kw["timestep"], guidance=torch.full([1], 3.5, device=dev),
                     pooled_projections=kw["pooled"], encoder_hidden_states=text, txt_ids=torch.zeros(512, 3, device=dev),
                     img_ids=ids, controlnet_block_samples=d, controlnet_single_block_samples=s, return_dict=False)[0]
        return vae.decode(torch.randn(1, 16, side // 8, side // 8, device=dev, dtype=dt)).sample

    image()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(args.reps):
        image()
    torch.cuda.synchronize()
    s = (time.perf_counter() - t) / args.reps
    print(f"full-size bf16 on {torch.cuda.get_device_name()}: {side}x{side}, {steps} steps, batch 1")
    print(f"  {s:.2f} s per target  ->  {3600 / s:.0f} pairs per GPU-hour (before the ID filter)")
    print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=8, help="identity images in the larger run (4 pairs each)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2, help="--full-size: timed targets")
    ap.add_argument("--full-size", action="store_true", help="real-size random weights, bf16, on the GPU")
    args = ap.parse_args()
    full_mode(args) if args.full_size else cpu_mode(args)


if __name__ == "__main__":
    main()
