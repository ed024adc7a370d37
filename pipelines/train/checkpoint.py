"""Training checkpoints: ``OUT/checkpoints/step-N/`` holds

- ``infusenet/``, ``image_proj/``, ``infu.json``: the full trainable weights in our native
  layout (``InfUPipeline`` and ``infu generate --infu`` load it; so does a resumed run on
  any number of workers);
- ``optimizer.pt``: the full optimizer state (FQN keys, gathered from FSDP shards);
- ``trainer_state.pt``: step, number of workers, LR scheduler, skipped-row counts;
- ``rank-R.pt``: each worker's RNG states and its own skipped counts.

Every worker writes into ``step-N.tmp/``, worker 0 renames it to ``step-N`` once all of it
is written: a run killed at any point (kill -9 included) leaves the latest checkpoint whole
or absent, never half-written; leftovers of a killed save are ignored and removed.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxControlNetModel

from infu_model.projection import ProjectionNetwork
from pipelines.train.parallel import Workers, full_state

PARTS = (("infusenet", FluxControlNetModel), ("image_proj", ProjectionNetwork))


def finished_checkpoints(out: Path) -> list[Path]:
    """The whole checkpoints, oldest first (``step-N.tmp`` is a save in progress or a killed one)."""
    return sorted(p for p in (out / "checkpoints").glob("step-*") if not p.name.endswith(".tmp"))


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
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, model, opt, sched, configs: dict, meta: dict, workers: Workers,
                    skipped: dict, keep: int) -> None:
    """Called by every worker at the same step (gathering FSDP shards is collective)."""
    root = out / "checkpoints"
    d = root / f"step-{step:08d}"
    tmp = d.with_name(d.name + ".tmp")
    if workers.rank == 0:
        for stale in root.glob("*.tmp"):  # a save that a killed run left behind
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    workers.barrier()
    torch.save({"rng": rng_state(), "skipped": skipped}, tmp / f"rank-{workers.rank}.pt")
    weights, optimizer = full_state(model, opt, workers)
    total = workers.sum_counts(skipped)
    if workers.rank == 0:
        save_weights(plain_modules(weights, configs), tmp, {**meta, "step": step})
        torch.save(optimizer, tmp / "optimizer.pt")
        torch.save({"step": step, "world": workers.world, "scheduler": sched.state_dict(), "skipped": total},
                   tmp / "trainer_state.pt")
    workers.barrier()  # every worker's file is in before the checkpoint becomes visible
    if workers.rank == 0:
        tmp.rename(d)
        for old in finished_checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    workers.barrier()


def load_trainer_state(ckpt: Path, workers: Workers) -> dict:
    """The checkpoint's step, scheduler and this worker's skipped counts; RNG states are restored
    when the number of workers is the one that saved it (a different number starts each worker
    with its own fresh RNG: nothing in the objective draws from them)."""
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    mine = ckpt / f"rank-{workers.rank}.pt"
    if state["world"] == workers.world and mine.is_file():
        own = torch.load(mine, weights_only=False)
        set_rng_state(own["rng"])
        state["skipped"] = own["skipped"]
    elif workers.rank != 0:
        state["skipped"] = {}
    return state
