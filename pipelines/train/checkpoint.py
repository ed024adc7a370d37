"""Training checkpoints: ``OUT/checkpoints/step-N/`` holds

- ``infusenet/``, ``image_proj/``, ``infu.json``: the full trainable weights in our native
  layout (``InfUPipeline`` and ``infu generate --infu`` load it; so does a resumed run on
  any number of workers);
- ``optimizer.pt``: the full optimizer state (FQN keys, gathered from FSDP shards), read back
  with ``torch.load(weights_only=True)``: tensors and plain values only;
- ``trainer_state.json``: step, number of workers, LR scheduler, skipped-row counts;
- ``rank-R.json``: each worker's RNG states and its own skipped counts.

Nothing a resume reads can run code: checkpoints sit on storage every worker shares, and a
pickle planted there would otherwise run on all of them.

Every worker writes into ``step-N.tmp/``, worker 0 renames it to ``step-N`` once all of it
is written: a run killed at any point (kill -9 included) leaves the latest checkpoint whole
or absent, never half-written; leftovers of a killed save are ignored and removed.

Which checkpoint a run resumes from and how many are kept is the launcher's business:

- ``RayTrainCheckpoints`` (``infu train``): each checkpoint is reported with
  ``ray.train.report`` where it lies (Ray Train's experiment folder is ``OUT/checkpoints``);
  Ray Train records it, keeps the newest ``CheckpointConfig.num_to_keep`` and hands the
  latest to a resumed run (``ray.train.get_checkpoint``);
- ``FolderCheckpoints`` (``train_loop`` called in one process or under any other
  ``torch.distributed`` launcher): the newest whole ``step-N`` folder, the newest
  ``keep_checkpoints`` kept.

An output in object storage (``infu train`` with ``output: s3://...``) has no rename and no shared
folder: each worker writes its part of ``step-N`` into a folder of its own on its machine and
reports it; Ray Train uploads every part into ``OUT/checkpoints/step-N`` and records the
checkpoint once all of them are in (its record is what a resume trusts, so a save cut short is
never resumed from). A resumed worker downloads the recorded checkpoint (worker 0 alone the
optimizer state); worker 0 uploads the train log as it grows and ``final/`` at the end.
"""
from __future__ import annotations

import json
import pickle
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxControlNetModel

from infu_model.projection import ProjectionNetwork
from infu_model.storage import as_path, download_tree, is_uri, upload
from pipelines.bucket_runs import BucketLease
from pipelines.faults import TrainingRefused
from pipelines.job import finished_checkpoints, lease_file
from pipelines.sink import Lease, holding
from pipelines.train.parallel import Workers, full_state

PARTS = (("infusenet", FluxControlNetModel), ("image_proj", ProjectionNetwork))


def latest_checkpoint(out: Path) -> Path | None:
    found = finished_checkpoints(out)
    return found[-1] if found else None


def plain_modules(full: dict, configs: dict) -> dict:
    """Plain InfuseNet and projection modules holding a full state dict of ``InfUTrainable``
    (built on the meta device and given the tensors: no second copy of the weights)."""
    out = {}
    for name, cls in PARTS:
        prefix = name + "."
        with torch.device("meta"):
            module = cls.from_config(configs[name])
        module.load_state_dict({k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)},
                               strict=True, assign=True)
        out[name] = module
    return out


def save_weights(modules: dict, d: Path, meta: dict) -> None:
    for name, _ in PARTS:
        modules[name].save_pretrained(d / name)
    (d / "infu.json").write_text(json.dumps(meta))


def rng_state() -> dict:
    """This process's RNG states as JSON values."""
    version, internal, gauss = random.getstate()
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": {"key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "torch": torch.get_rng_state().tolist(),
            "cuda": [t.tolist() for t in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(n["key"], np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(t, dtype=torch.uint8) for t in state["cuda"]])


def _json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def save_checkpoint(out: Path, step: int, model, opt, sched, configs: dict, meta: dict, workers: Workers,
                    skipped: dict, lease: Lease | None = None, own_folder: bool = False) -> Path:
    """``OUT/checkpoints/step-N``, written whole or not at all; called by every worker at the same
    step (gathering FSDP shards is collective). With the run's ``lease``, worker 0 touches the
    folder only while the run holds it: a killed run's workers, alive for seconds, stay out.
    ``own_folder``: ``out`` is this worker's alone (its part is uploaded, see the module doc)."""
    root = out / "checkpoints"
    d = root / f"step-{step:08d}"
    tmp = d if own_folder else d.with_name(d.name + ".tmp")
    if own_folder:
        shutil.rmtree(root, ignore_errors=True)  # the part saved before: reported, so uploaded already
        d.mkdir(parents=True)
    elif workers.rank == 0:
        with holding(lease):
            for stale in root.glob("*.tmp"):  # a save that a killed run left behind
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir(parents=True)
    workers.barrier()
    _json(tmp / f"rank-{workers.rank}.json", {"rng": rng_state(), "skipped": skipped})
    weights, optimizer = full_state(model, opt, workers)
    total = workers.sum_counts(skipped)
    if workers.rank == 0:
        save_weights(plain_modules(weights, configs), tmp, {**meta, "step": step})
        torch.save(optimizer, tmp / "optimizer.pt")
        _json(tmp / "trainer_state.json",
              {"step": step, "world": workers.world, "scheduler": sched.state_dict(), "skipped": total})
    if own_folder:
        return d
    workers.barrier()  # every worker's file is in before the checkpoint becomes visible
    if workers.rank == 0:
        # a run resumed from an older checkpoint than the newest folder (one Ray Train never recorded:
        # killed before reporting it) trains this step again, to the same weights
        with holding(lease):
            shutil.rmtree(d, ignore_errors=True)
            tmp.rename(d)
    workers.barrier()
    return d


class FolderCheckpoints:
    """Checkpoints without Ray Train: a run resumes from the newest whole folder, the newest ``keep`` stay;
    ``lease``: the run's, when its launcher took one (a plain call, torchrun or ``mp.spawn`` take none)."""

    own_folder = False

    def __init__(self, out: Path, keep: int, lease: Lease | None = None):
        if is_uri(out):
            raise ValueError(f"{out}: training into object storage runs on Ray Train (`infu train`, or "
                             "pipelines.train.run_train), which uploads the checkpoints; give a folder here")
        self.out = self.work = Path(out)
        self.keep, self.lease = keep, lease

    def latest(self) -> Path | None:
        return latest_checkpoint(self.out)

    def report(self, workers: Workers, metrics: dict | None, ckpt: Path | None) -> None:
        if ckpt is not None and workers.rank == 0:
            for old in finished_checkpoints(self.out)[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)

    def publish(self, *names: str) -> None:
        """Nothing to do: ``work`` is the output folder."""

    def close(self) -> None:
        """Nothing to remove."""


class RayTrainCheckpoints:
    """Checkpoints and metrics reported to Ray Train (run by ``infu train``'s ``TorchTrainer``, whose
    experiment folder is ``OUT/checkpoints``); Ray Train keeps the newest and resumes from its record.
    ``work``: where this worker writes its files, the output folder itself, or for an output in object
    storage a folder of its own on its machine, whose files ``publish`` uploads."""

    def __init__(self, out):
        import ray.train

        self.out = as_path(out)
        self.own_folder = is_uri(out)
        self.rank = ray.train.get_context().get_world_rank()
        # what run_train took before starting the workers
        self.lease = (BucketLease if self.own_folder else Lease).current(lease_file(self.out))
        self.work = Path(tempfile.mkdtemp(prefix="infu-train-")) if self.own_folder else self.out

    def latest(self) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            # none recorded: checkpoints written by train_loop under another launcher are resumed as well (a
            # bucket has none: only Ray Train's record tells a whole checkpoint from one cut short)
            return None if self.own_folder else latest_checkpoint(self.out)
        if not self.own_folder:
            return Path(ckpt.path)
        name = ckpt.path.rstrip("/").rsplit("/", 1)[-1]  # (Ray Train's path inside the output's filesystem)
        # FSDP loads the optimizer state on worker 0 and hands out its shards; DDP's workers each load it
        return download_tree(self.out / "checkpoints" / name, self.work / "resumed" / name,
                             skip=() if self.rank == 0 else ("optimizer.pt",))

    def report(self, workers: Workers, metrics: dict | None, ckpt: Path | None) -> None:
        """Every worker reports at the same steps; worker 0's metrics are the run's (its log record).
        In place (a folder): nothing to upload; in object storage each worker uploads its part."""
        import ray.train
        from ray.train import CheckpointUploadMode

        if not self.own_folder:
            ray.train.report(metrics or {}, checkpoint=ray.train.Checkpoint(str(ckpt)) if ckpt else None,
                             checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)
            return
        # the local copy stays until the next save: worker 0 writes final/ from the last
        ray.train.report(metrics or {}, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt)) if ckpt else None,
                         checkpoint_dir_name=ckpt.name if ckpt else None,
                         checkpoint_upload_mode=CheckpointUploadMode.SYNC, delete_local_checkpoint_after_upload=False)

    def publish(self, *names: str) -> None:
        """Worker 0's files ``names`` (in ``work``) uploaded to the output in object storage, while this run
        still holds it."""
        if not self.own_folder or self.rank != 0:
            return
        with holding(self.lease):
            for name in names:
                if (self.work / name).exists():
                    upload(self.work / name, self.out / name)

    def close(self) -> None:
        if self.own_folder:
            shutil.rmtree(self.work, ignore_errors=True)


class UnsafeCheckpoint(TrainingRefused):
    """A checkpoint holds something a resume will not read: it could run code."""


def load_trainer_state(ckpt: Path, workers: Workers) -> dict:
    """The checkpoint's step, scheduler and this worker's skipped counts; RNG states are restored
    when the number of workers is the one that saved it (a different number starts each worker
    with its own fresh RNG: nothing in the objective draws from them)."""
    if not (ckpt / "trainer_state.json").is_file():
        raise UnsafeCheckpoint(f"{ckpt} has no trainer_state.json (a checkpoint from before pickles were refused?): "
                               "it is not read, since unpickling can run code; start from its weights with model.init")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    mine = ckpt / f"rank-{workers.rank}.json"
    if state["world"] == workers.world and mine.is_file():
        own = json.loads(mine.read_text())
        set_rng_state(own["rng"])
        state["skipped"] = own["skipped"]
    elif workers.rank != 0:
        state["skipped"] = {}
    return state


def load_optimizer_state(ckpt: Path) -> dict:
    """The full optimizer state: tensors and plain values only (``weights_only``: a pickled object that
    would run code on loading is refused, not run)."""
    try:
        return torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"{ckpt / 'optimizer.pt'} holds more than tensors and plain values; not read "
                               f"(it could run code): {str(e).splitlines()[0]}") from None
