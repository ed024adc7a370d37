"""``infu doctor``: what each job would run on here, and where a config asks for a GPU it will not get.

The placements come from the jobs' typed configs (``JobConfig.models``) and the one rule in
``infu_model.runtime.placement``; every job prints its own line of this at start (``job_lines``).
"""
from __future__ import annotations

import os

from infu_model.runtime import Placement, gpus, placement


def placements(cfg) -> list[Placement]:
    return [placement(model, device, runtime) for model, device, runtime in cfg.models()]


def job_lines(name: str, cfg) -> list[str]:
    """One line saying where the job's models run, then one warning per model that will not run where
    its config asks (an ONNX Runtime without CUDA, a torch without a GPU)."""
    found = placements(cfg)
    if not found:
        return []
    where = sorted({p.runs_on for p in found})
    lines = [f"{name}: runs on {', '.join(where)} ({'; '.join(p.line() for p in found if not p.problem) or '-'})"]
    return lines + [f"{name}: warning: {p.line()}" for p in found if p.problem]


def machine_lines(facts: dict) -> list[str]:
    cards = facts["gpus"]
    cuda = f"CUDA {facts['cuda']}" if facts["cuda"] else "a CPU build, no CUDA"
    lines = [f"torch        {facts['torch']} ({cuda}); distributed: NCCL {_yes(facts['nccl'])}, "
             f"gloo {_yes(facts['gloo'])}",
             f"CPUs         {facts['cpus']}"]
    if not cards:
        lines.append("GPUs         none that torch sees: bf16 runs on the CPU (slowly); FP8 needs a GPU of compute "
                     "capability 8.9+ (Ada, Hopper)")
    for g in cards:
        lines.append(f"GPU {g['index']}        {g['name']} (sm {g['capability']}), {g['free_gib']:.1f} of "
                     f"{g['total_gib']:.1f} GiB free; bf16 {_yes(g['bf16'])}, FP8 {_yes(g['fp8'])}")
    cuda_ep = "CUDAExecutionProvider" in facts["providers"]
    lines.append(f"onnxruntime  {facts['onnxruntime']}: {', '.join(facts['providers'])}"
                 + ("" if cuda_ep else " (insightface, nudenet and the OCR detector run on the CPU; "
                                       "onnxruntime-gpu: bash scripts/setup.sh --gpu)"))
    dlib = {True: "CUDA build", False: "CPU build", None: "not installed"}[facts["dlib_cuda"]]
    lines.append(f"dlib         {dlib}")
    return lines


def ray_lines(address: str | None) -> list[str]:
    """The cluster's resources when ``address`` is given (joined, not started); else what an embedded
    Ray would offer on this machine."""
    if not address:
        return [f"ray          embedded (started by each job): {os.cpu_count()} CPUs, {len(gpus())} GPUs"]
    import logging

    import ray

    from pipelines.ray_runtime import check_cluster

    check_cluster(address)
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        total, free = ray.cluster_resources(), ray.available_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    finally:
        ray.shutdown()
    return [f"ray          {address}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs ({free.get('CPU', 0):g} free), "
            f"{total.get('GPU', 0):g} GPUs ({free.get('GPU', 0):g} free)"]


def _yes(flag) -> str:
    return "yes" if flag else "no"


def doctor_lines(facts: dict, found: dict[str, list[Placement]], address: str | None = None) -> list[str]:
    """The report: the machine (``facts``), Ray, and each job's placements (``found``: job -> placements)."""
    lines = machine_lines(facts) + ray_lines(address) + [""]
    for name, placed in found.items():
        if not placed:
            lines.append(f"{name:<12} no model configured")
        lines += [f"{name if i == 0 else '':<12} {p.line()}" for i, p in enumerate(placed)]
    return lines
