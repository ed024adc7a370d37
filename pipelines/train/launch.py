"""``run_train``: the training loop on Ray Train's ``TorchTrainer``, one worker per GPU (or CPU
worker), on the embedded Ray or a cluster."""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import yaml

from pipelines.job import check_inputs, claim_output, input_files
from pipelines.train.checkpoint import UnsafeCheckpoint
from pipelines.train.loaders import NotEnoughData, bucket_counts, epoch_batches
from pipelines.train.loop import check_train, train_loop


def absolute_paths(cfg: dict) -> dict:
    """Ray Train workers do not share the caller's working directory: every path made absolute."""
    def absolute(p):
        return str(Path(p).expanduser().resolve()) if p else p

    return {**cfg, "output": absolute(cfg["output"]),
            "model": {**cfg["model"], "base": absolute(cfg["model"].get("base")), "init": absolute(cfg["model"].get("init"))},
            "data": {**cfg["data"], "parquet": absolute(cfg["data"].get("parquet"))},
            "cache": {**(cfg.get("cache") or {}), "dir": absolute((cfg.get("cache") or {}).get("dir"))}}


def check_cpus(r: dict, loader: str) -> None:
    """CPU workers that take every CPU leave none for the ray loader's read tasks: the job would wait forever."""
    import ray

    if r.get("use_gpu") or loader != "ray":
        return
    have = ray.cluster_resources().get("CPU", 0)
    need = int(r.get("num_workers", 1)) * float(r.get("cpus_per_worker", 1))
    if need + 0.25 > have:
        raise ValueError(f"ray: {r.get('num_workers', 1)} workers x {r.get('cpus_per_worker', 1)} CPUs leave none of "
                         f"the cluster's {have:g} CPUs for the ray loader's reads: lower ray.cpus_per_worker or "
                         f"num_workers, or use data.loader: plan")


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def follow(path: Path, max_steps: int, log, stop: threading.Event, history=(), every_s: float = 1.0) -> None:
    """Report each record rank 0 appends to ``train_log.jsonl`` (the workers' own output stays in
    their log files), until ``stop``; lines in ``history`` (there before the run) are not news."""
    seen = set(history)
    while True:
        last_look = stop.wait(every_s)
        for ln in log_lines(path):
            if ln in seen:
                continue
            try:
                r = json.loads(ln)
            except json.JSONDecodeError:  # caught mid-write: read it next time
                continue
            seen.add(ln)
            mem = f"  {r['gpu_mem_gib']:.1f} GiB" if r.get("gpu_mem_gib") else ""
            log(f"train: step {r['step']}/{max_steps}  loss {r['loss']:.4f}  lr {r['lr']:.2e}  "
                f"{r['samples_per_s']:.2f} samples/s{mem}")
        if last_look:
            return


def check_training(cfg: dict) -> None:
    """Everything a training run can be refused for, before it touches its output or starts Ray:
    the options, the model folders, and training data that can form its batches (Parquet with
    the columns training reads, and in some bucket at least one micro-batch of rows per worker
    and epoch: else the loaders would cycle through epochs forever)."""
    check_train(cfg)
    m, data, r = cfg["model"], cfg["data"], cfg["ray"]
    for key in ("base", "init"):
        if key == "base" and not m.get("base"):
            raise ValueError("model.base: the FLUX base folder is required")
        if m.get(key) and not Path(m[key]).expanduser().exists():
            raise FileNotFoundError(f"model.{key} not found: {m[key]}")
    if not data.get("parquet"):
        raise ValueError("data.parquet: the training data folder is required")
    files = input_files(data["parquet"])
    check_inputs(files, [data["image_column"], data["embedding_column"], "bucket"], "infu train")
    per_epoch = epoch_batches(bucket_counts(files), int(cfg["train"]["micro_batch_size"]), data["parquet"])
    workers = int(r["num_workers"])
    if data.get("loader", "ray") == "ray" and per_epoch < workers:
        raise NotEnoughData(f"{data['parquet']} forms {per_epoch} micro-batch(es) per epoch, fewer than the {workers} "
                            "workers of the ray loader each need: use fewer workers or data.loader: plan")


def run_train(cfg: dict, ray_address: str | None = None, log=print) -> dict:
    """Launch ``train_loop`` on every worker (``ray.num_workers``, ``ray.use_gpu``, ``ray.fsdp``)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.ray_runtime import init_ray

    check_training(cfg)
    claim_output(cfg["output"], "train")
    init_ray(ray_address, {"ray": {}, "progress": False})
    r = cfg["ray"]
    check_cpus(r, cfg["data"].get("loader", "ray"))
    cfg = absolute_paths(cfg)
    out = Path(cfg["output"])
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    per_worker = {"CPU": float(r.get("cpus_per_worker", 1))}
    if r.get("use_gpu"):
        per_worker["GPU"] = 1
    trainer = TorchTrainer(train_loop, train_loop_config=cfg,
                           scaling_config=ScalingConfig(num_workers=int(r.get("num_workers", 1)),
                                                        use_gpu=bool(r.get("use_gpu", False)),
                                                        resources_per_worker=per_worker),
                           run_config=RunConfig(name="infu-train", storage_path=str(out / "ray")))
    stop = threading.Event()
    path = out / "train_log.jsonl"
    reporter = threading.Thread(target=follow, args=(path, int(cfg["train"]["max_steps"]), log, stop, log_lines(path)),
                                daemon=True)
    reporter.start()
    try:
        trainer.fit()
    except Exception as e:  # a worker refusing the data or a checkpoint is a one-line error, not a crash
        refused = [f for f in (getattr(e, "worker_failures", None) or {}).values()
                   if isinstance(f, (NotEnoughData, UnsafeCheckpoint))]
        if refused:
            raise refused[0] from None
        raise
    finally:
        stop.set()
        reporter.join()
    recs = [json.loads(ln) for ln in log_lines(path)]
    return {"steps": recs[-1]["step"] if recs else 0, "final_loss": recs[-1]["loss"] if recs else math.nan,
            "skipped": recs[-1]["skipped"] if recs else {}, "output": str(out)}
