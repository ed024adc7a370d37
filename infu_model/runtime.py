"""Where models run on this machine: torch's CUDA, ONNX Runtime's execution providers, dlib's build.

The one place that turns a config's ``device`` into a placement, for the stages that build sessions
(``ort_providers``) and for ``infu doctor`` and the line every job prints at start (``placement``).
ONNX Runtime is the trap: its CPU wheel runs a session asked for ``cuda`` on the CPU without a word,
and ``onnxruntime-gpu`` installs the same module, so which one is there decides where insightface,
nudenet and the OCR detector run.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

GPU_SETUP = "bash scripts/setup.sh --gpu"
RUNTIMES = ("torch", "onnxruntime", "dlib", "ray-train")


@dataclass(frozen=True)
class Placement:
    model: str            # what runs ("SCRFD detector", "BLIP-2", "InfU")
    asked: str            # the config's device
    runtime: str          # torch | onnxruntime | dlib
    runs_on: str          # where it will run: cpu, cuda:0, or "nowhere" when it cannot start
    problem: str = ""     # why that differs from what was asked

    def line(self) -> str:
        where = f"{self.model} ({self.runtime}) on {self.runs_on}"
        return f"{where}: {self.problem}" if self.problem else where


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


@lru_cache(maxsize=1)
def ort_available() -> tuple[str, ...]:
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def ort_cuda(device) -> bool:
    """Whether an ONNX Runtime session asked for ``device`` runs on a GPU here."""
    return is_cuda(device) and "CUDAExecutionProvider" in ort_available()


def ort_providers(device) -> list:
    """The providers for a session on ``device``: CUDA first when asked for and installed, CPU always."""
    if ort_cuda(device):
        index = str(device).partition(":")[2] or "0"
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(model, device="cpu", threads: int | None = None):
    """An ONNX Runtime session of ``model`` (a path, or the model's bytes) on ``device`` (its providers:
    ``ort_providers``), with ``threads`` intra-op threads when given (else ORT's own: every core) and
    ORT's defaults otherwise (full graph optimisation, the CPU memory arena on)."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.log_severity_level = 3  # errors only: ORT's notes on where it placed nodes are not a user's news
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts,
                                        providers=ort_providers(device))


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def torch_device(device) -> str:
    """``device`` for a torch model: ``cuda`` where torch has no GPU falls back to the CPU (the job's start
    line says so: ``placement``)."""
    return "cpu" if is_cuda(device) and not torch_cuda() else str(device or "cpu")


def placement(model: str, device, runtime: str) -> Placement:
    """Where ``model``, asked to run on ``device`` through ``runtime``, will run here."""
    asked = str(device or "cpu")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if not is_cuda(asked):
        return Placement(model, asked, runtime, "cpu")
    if runtime == "dlib":
        return Placement(model, asked, runtime, "cpu", "dlib-bin is a CPU build: dlib runs on the CPU")
    if runtime == "onnxruntime":
        if ort_cuda(asked):
            return Placement(model, asked, runtime, asked)
        return Placement(model, asked, runtime, "cpu", "asked for cuda, falls back to the CPU: onnxruntime has no "
                                                       f"CUDAExecutionProvider (install onnxruntime-gpu: {GPU_SETUP})")
    if torch_cuda():
        return Placement(model, asked, runtime, asked)
    if runtime == "ray-train":
        return Placement(model, asked, runtime, "nowhere", "ray.use_gpu asks Ray for a GPU per worker and this "
                                                           "machine has none (use_gpu: false, or --ray-address a GPU "
                                                           "cluster)")
    return Placement(model, asked, runtime, "cpu", "asked for cuda, falls back to the CPU: this torch has no CUDA "
                                                   f"device (a CPU build or no GPU visible; {GPU_SETUP})")


def card(device) -> dict | None:
    """The CUDA ``device`` as torch sees it: name, compute capability, free and total memory (GiB), bf16
    and FP8 (compute capability 8.9+: Ada, Hopper); None for the CPU or a torch without CUDA."""
    import torch

    if not is_cuda(device) or not torch.cuda.is_available():
        return None
    i = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(i)
    free, total = torch.cuda.mem_get_info(i)
    cap = (props.major, props.minor)
    return {"index": i, "name": props.name, "capability": f"{cap[0]}.{cap[1]}", "free_gib": free / 2**30,
            "total_gib": total / 2**30, "bf16": cap >= (8, 0), "fp8": cap >= (8, 9)}


def gpus() -> list[dict]:
    """Each CUDA device torch sees (``card``)."""
    import torch

    return [card(f"cuda:{i}") for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def machine() -> dict:
    """What this machine offers the models: torch and its CUDA, the GPUs, NCCL, ONNX Runtime, dlib."""
    import os

    import onnxruntime
    import torch

    try:
        import dlib
        dlib_cuda = bool(getattr(dlib, "DLIB_USE_CUDA", False))
    except ImportError:
        dlib_cuda = None
    dist = torch.distributed.is_available()
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": gpus(),
            "nccl": bool(dist and torch.distributed.is_nccl_available()),
            "gloo": bool(dist and torch.distributed.is_gloo_available()),
            "onnxruntime": onnxruntime.__version__, "providers": list(ort_available()),
            "dlib_cuda": dlib_cuda, "cpus": os.cpu_count()}
