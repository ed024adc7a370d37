"""Data parallelism for the training loop: which worker this is and on which device, and one
model trained by all of them.

Ray Train starts the workers and their process group (gloo on CPUs, NCCL on GPUs); any
``torch.distributed`` launcher does as well. With more than one worker the trainables
(InfuseNet + projection) are wrapped in

- FSDP (``ray.fsdp: true``, the paper's setup; torch's ``fully_shard``): parameters,
  gradients and optimizer states sharded over the workers per InfuseNet block, a
  mixed-precision policy that computes in the base's dtype and reduces gradients in
  float32; the frozen base is replicated, not sharded;
- or DDP (``ray.fsdp: false``): replicated trainables, gradients averaged in backward.

Checkpoints gather full state dicts (FQN keys, wrapper prefixes removed), so a checkpoint
loads into plain modules and resumes on any number of workers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)


@dataclass(frozen=True)
class Workers:
    rank: int
    world: int
    device: torch.device

    @classmethod
    def current(cls, use_gpu: bool) -> "Workers":
        grouped = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if grouped else (0, 1)
        if use_gpu and torch.cuda.is_available():
            try:  # Ray Train knows which of the node's GPUs is this worker's
                from ray.train.torch import get_device

                device = get_device()
            except Exception:  # noqa: BLE001 - another launcher: LOCAL_RANK picks the GPU
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        return cls(rank, world, device)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all workers."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum_counts(self, counts: dict) -> dict:
        """Counters summed over all workers (every worker calls it)."""
        per_worker = self.gather(dict(counts))
        return {k: sum(c.get(k, 0) for c in per_worker) for k in sorted(set().union(*per_worker))}

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def wrap(trainable: torch.nn.Module, workers: Workers, fsdp: bool, compute_dtype: torch.dtype) -> torch.nn.Module:
    """``trainable`` as every worker's share of one model (unchanged for one worker)."""
    trainable.to(workers.device)
    if workers.world == 1:
        return trainable
    if not fsdp:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(trainable, device_ids=[workers.device.index] if workers.device.type == "cuda" else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    net = trainable.infusenet
    for block in [*net.transformer_blocks, *net.single_transformer_blocks]:
        fully_shard(block, mp_policy=policy)
    fully_shard(trainable, mp_policy=policy)
    return trainable


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """The global gradient norm, clipped: under FSDP the norm of the whole model's gradient,
    not of one worker's shard (the shards are DTensors and their norm is reduced)."""
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model, opt, workers: Workers) -> tuple[dict, dict]:
    """(model, optimizer) full state dicts on worker 0 (``{}`` elsewhere); collective under FSDP."""
    if not is_sharded(model) and workers.rank != 0:
        return {}, {}
    return get_model_state_dict(model, options=_FULL), get_optimizer_state_dict(model, opt, options=_FULL)


def load_optimizer(model, opt, state: dict | None, workers: Workers) -> None:
    """A full optimizer state dict into ``opt``; under FSDP only worker 0 needs to read it (the
    shards are sent to the others), else every worker passes the whole dict."""
    sharded = is_sharded(model) and workers.world > 1
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=sharded)
    set_optimizer_state_dict(model, opt, state if state is not None else {}, options=options)
