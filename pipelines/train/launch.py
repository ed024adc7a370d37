"""``run_train``: the training loop on Ray Train's ``TorchTrainer``, one worker per GPU (or CPU
worker), on the embedded Ray or a cluster."""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import replace

from curation.engine import plain
from infu_model.storage import as_path, is_uri, resolve
from pipelines.bucket_runs import BucketLease
from pipelines.faults import TrainingRefused, WorkersLost, causes
from pipelines.job import SourceSpec, check_inputs, finished_checkpoints, input_files, job_run, lease_file, start_run
from pipelines.sink import Lease
from pipelines.train.config import TrainConfig, TrainRayOptions
from pipelines.train.loaders import NotEnoughData, bucket_counts, epoch_batches
from pipelines.train.watch import lost_for_good, lost_workers, watched_by


def check_cpus(r: TrainRayOptions, loader: str) -> None:
    """CPU workers that take every CPU leave none for the ray loader's read tasks: the job would wait forever."""
    import ray

    if r.use_gpu or loader != "ray":
        return
    have = ray.cluster_resources().get("CPU", 0)
    need = r.num_workers * r.cpus_per_worker
    if need + 0.25 > have:
        raise ValueError(f"ray: {r.num_workers} workers x {r.cpus_per_worker:g} CPUs leave none of the cluster's "
                         f"{have:g} CPUs for the ray loader's reads: lower ray.cpus_per_worker or num_workers, "
                         "or use data.loader: plan")


def progress_line(metrics: dict, max_steps: int) -> str:
    mem = f"  {metrics['gpu_mem_gib']:.1f} GiB" if metrics.get("gpu_mem_gib") else ""
    return (f"train: step {metrics['step']}/{max_steps}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  "
            f"{metrics['samples_per_s']:.2f} samples/s{mem}")


def resumes_from(out) -> str:
    """The checkpoint a restart or a rerun resumes from (RayTrainCheckpoints.latest): the latest Ray Train
    recorded (its snapshot in OUT/checkpoints), not a newer folder whose report a lost worker cut short;
    with none recorded, the newest whole folder."""
    try:
        snapshot = json.loads((as_path(out) / "checkpoints" / "checkpoint_manager_snapshot.json").read_text())
        return snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    except (OSError, ValueError, KeyError, TypeError):
        found = finished_checkpoints(out)
        return found[-1].name if found else "the start"


def step_reached(out) -> int:
    """The last step the run logged (train_log.jsonl), 0 before the first."""
    recs = records(out)
    return recs[-1]["step"] if recs else 0


def records(out) -> list[dict]:
    """The run's log records (``OUT/train_log.jsonl``, in a folder or object storage)."""
    path = as_path(out) / "train_log.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.is_file() else []


def show_progress(queue, cfg: TrainConfig, log, done: threading.Event) -> None:
    """Say each reported record, and each recovery, until ``done``; then what the queue holds at that
    moment, and no more: after Ctrl-C the workers go on reporting until the driver's Ray stops them, and
    draining until the queue stays empty would wait for the whole run. After lost workers, say once if
    their replacements wait for resources."""
    from ray.util.queue import Empty

    restarted, waiting_said = 0.0, False

    def say(event: dict) -> None:
        nonlocal restarted, waiting_said
        if "lost" in event:
            log(f"train: lost {event['lost']}; Ray Train restarts every worker from {resumes_from(cfg.output)} "
                f"once {cfg.ray.num_workers} can be placed (ray.max_failures: {cfg.ray.max_failures})")
            restarted, waiting_said = time.time(), False
        elif "waiting" in event:
            if not waiting_said:
                log(waiting_line(cfg.ray))
                waiting_said = True
        else:
            log(progress_line(event, cfg.train.max_steps))
            restarted = 0.0

    while not done.is_set():
        try:
            say(queue.get(timeout=0.5))
        except Empty:
            if restarted and not waiting_said and time.time() - restarted > WAIT_NOTICE_S:
                log(waiting_line(cfg.ray))
                waiting_said = True
    for event in queue.get_nowait_batch(queue.qsize()):
        say(event)


WAIT_NOTICE_S = 15  # lost workers not replaced after this long: say that the run waits for resources


def waiting_line(r: TrainRayOptions) -> str:
    import ray

    free = ray.available_resources()
    need = f"{r.cpus_per_worker:g} CPU{' + 1 GPU' if r.use_gpu else ''}"
    return (f"train: waiting for resources: {r.num_workers} workers x {need} (free now: {free.get('CPU', 0):g} CPU, "
            f"{free.get('GPU', 0):g} GPU); it resumes by itself once a node joins or frees them")


def check_training(data_dir, cfg: TrainConfig) -> bool:
    """Everything a training run on ``data_dir`` (its ``data.parquet``) can be refused for, before it
    touches its output or starts Ray (the config was checked when it was parsed): the batch
    arithmetic, the model folders, and training data that can form its batches (Parquet with the
    columns training reads, and in some bucket at least one micro-batch of rows per worker and
    epoch: else the loaders would cycle through epochs forever)."""
    cfg.check()
    m, data = cfg.model, replace(cfg.data, parquet=str(data_dir) if data_dir else None)
    if not m.base:
        raise ValueError("model.base: the FLUX base model is required")
    if not data.parquet:
        raise ValueError("data.parquet: the training data folder is required")
    files = input_files(data.parquet)
    check_inputs(files, [data.image_column, data.embedding_column, "bucket"], "infu train")
    per_epoch = epoch_batches(bucket_counts(files), cfg.train.micro_batch_size, data.parquet)
    if data.loader == "ray" and per_epoch < cfg.ray.num_workers:
        raise NotEnoughData(f"{data.parquet} forms {per_epoch} micro-batch(es) per epoch, fewer than the "
                            f"{cfg.ray.num_workers} workers of the ray loader each need: use fewer workers or "
                            "data.loader: plan")
    return True


def fit_off_main_thread(trainer) -> None:
    """``trainer.fit()`` in a thread of its own, the main thread waiting: Ctrl-C and SIGTERM then reach
    our handling (what finished stays, one line, exit 130/143) instead of Ray Train's SIGINT handler,
    which it installs only on the main thread and which ends the process with exit 1 and no word. The
    run's actors stop with the driver, its finished checkpoints stay."""
    failed = []

    def fit():
        try:
            trainer.fit()
        except BaseException as e:  # noqa: BLE001 - raised again in the main thread
            failed.append(e)

    runner = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    runner.start()
    while runner.is_alive():
        runner.join(0.5)
    if failed:
        raise failed[0]


def ray_train_loop(config: dict) -> dict:
    """One worker's training under Ray Train's ``TorchTrainer``, from the checked config's plain values:
    metrics and checkpoints are reported to it, and it keeps and resumes them. The training stack
    (torch, diffusers: 8 s to import) is imported here, in the worker: the driver only names this function."""
    from pipelines.train.checkpoint import RayTrainCheckpoints
    from pipelines.train.loop import Trainer

    cfg = TrainConfig.parse(config, "infu train")
    return Trainer(cfg, RayTrainCheckpoints(cfg.output)).run()


@job_run("train", check_training)
def run_train(data_dir, out, cfg: TrainConfig, *, checked, claim, ray_address: str | None = None,
              build_cache: bool = False, overwrite: bool = False, log=print) -> dict:
    """Train on ``data_dir`` (SPSS or SPMS Parquet) into ``out``: ``train_loop`` on every worker
    (``ray.num_workers``, ``ray.use_gpu``, ``ray.fsdp``); ``build_cache``: first store the frozen
    encoders' outputs (``pipelines.train.cache.build_cache``) and train with them. A rerun resumes
    from the latest checkpoint; one whose settings would change the weights is refused unless
    ``overwrite`` (which starts over)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipelines.ray_runtime import init_ray

    cfg = cfg.updated({"data": {"parquet": str(data_dir)}, "output": str(out)}).absolute()
    # a changed setting that changes the weights is refused (train.max_steps and the like may change);
    # the workers it starts hold the lease, a killed run's, still alive, no longer do
    start_run(claim, cfg, [SourceSpec("data", "input", cfg.data.parquet)], overwrite,
              take_lease=lambda: (BucketLease.start if is_uri(out) else Lease.take)(lease_file(out)))
    if build_cache:
        from pipelines.train.cache import build_cache as build

        log(f"cache: {build(cfg.updated({'cache': {'enabled': True}}))}")
    init_ray(ray_address)
    r = cfg.ray
    check_cpus(r, cfg.data.loader)
    out = as_path(cfg.output)
    per_worker = {"CPU": r.cpus_per_worker, **({"GPU": 1} if r.use_gpu else {})}
    # the queue lives on the driver's node, as Ray Train's controller does: a lost worker node takes neither
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    metrics = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    # Ray Train's experiment folder is OUT/checkpoints: it records each checkpoint there (uploading the
    # workers' parts to object storage), keeps the newest and gives a resumed run (the same OUT) the latest
    storage, storage_path = resolve(str(out)) if is_uri(out) else (None, str(out))
    # the config goes as plain values: Ray Train's controller unpickles it, and a TrainConfig would import
    # the training stack there (torch, diffusers: seconds before every run's first step)
    trainer = TorchTrainer(ray_train_loop, train_loop_config=plain(cfg),
                           scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                                                        resources_per_worker=per_worker),
                           run_config=RunConfig(name="checkpoints", storage_path=storage_path, storage_filesystem=storage,
                                                checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
                                                failure_config=FailureConfig(max_failures=r.max_failures),
                                                callbacks=watched_by(metrics)))
    stop = threading.Event()
    reporter = threading.Thread(target=show_progress, args=(metrics, cfg, log, stop), daemon=True)
    reporter.start()
    try:
        fit_off_main_thread(trainer)
    except Exception as e:  # a worker refusing the data or a checkpoint is a one-line error, not a crash
        refused = [f for f in causes(e) if isinstance(f, TrainingRefused)]
        if refused:
            raise refused[0] from None
        if lost_for_good(e):
            raise WorkersLost(f"train: stopped at step {step_reached(out)} after {max(r.max_failures, 0) + 1} worker "
                              f"failure(s), the last: {lost_workers(e)} (ray.max_failures: {r.max_failures}); rerun "
                              f"the same command to resume from {resumes_from(out)}") from None
        raise
    finally:
        stop.set()
        reporter.join()
        metrics.shutdown()
    recs = records(out)
    return {"steps": recs[-1]["step"] if recs else 0, "final_loss": recs[-1]["loss"] if recs else math.nan,
            "skipped": recs[-1]["skipped"] if recs else {}, "output": str(out)}
