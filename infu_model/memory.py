"""Memory modes: one name for how InfU sits in GPU memory while it generates.

``memory:`` in the synth and eval jobs' ``model`` block, ``--memory`` of ``infu generate`` and
``infu app``. A mode is a ``MemoryPlan``: where the text encoders live, diffusers' offloading, the
weights' format and compiled blocks. ``auto`` picks the least saving that fits the card's free memory
and says what it chose and why.

- ``full``: everything resident in the model's dtype (bf16: about 40 GiB at 864x1152, FLUX.1-dev + InfU).
- ``24gb``: the linear layers of the transformer and InfuseNet in float8 (dynamic activations and
  weights, row-wise scales; torchao), compiled blocks, T5 streamed block by block. Needs a GPU with
  FP8 (compute capability 8.9+: Ada, Hopper); refused elsewhere.
- ``16gb``: 8-bit weight-only linears (torchao int8), T5 streamed, each model on the GPU only while it
  runs (diffusers' model offload). Runs on any GPU, and on the CPU.
- ``low_vram``: every model group-offloaded block by block (copies overlapped with compute): the least
  memory that stays usable, in the model's dtype.

Offloading (full, low_vram, and T5 streamed) gives the same image as ``full``; the 8-bit and FP8
modes change it a little (``bench/infer.py --memory-modes`` measures by how much, beside bf16 vs fp32).
"""
from __future__ import annotations

from dataclasses import dataclass

from infu_model.runtime import card

MODES = ("auto", "full", "24gb", "16gb", "low_vram")
WEIGHTS = ("native", "int8", "fp8")


@dataclass(frozen=True)
class MemoryPlan:
    name: str
    text_encoders: str = "gpu"   # gpu | offload (T5 streamed block by block)
    offload: str = "none"        # none | model | low_vram | sequential (InfUPipeline.set_memory)
    weights: str = "native"      # native (the model's dtype) | int8 (weight-only) | fp8 (dynamic, row-wise)
    compile: bool = False        # regional torch.compile of the FLUX blocks


PLANS = {
    "full": MemoryPlan("full"),
    "full, text encoders streamed": MemoryPlan("full, text encoders streamed", text_encoders="offload"),
    "24gb": MemoryPlan("24gb", text_encoders="offload", weights="fp8", compile=True),
    "16gb": MemoryPlan("16gb", text_encoders="offload", offload="model", weights="int8"),
    "low_vram": MemoryPlan("low_vram", text_encoders="offload", offload="low_vram"),
}
# auto: the first plan whose peak (GiB, 864x1152, bf16 FLUX.1-dev + InfU v1.0) fits the free memory;
# full and low_vram measured on an H200 (39.7 and 9.3 GiB), the others the targets until measured
PEAKS = (("full", 42.0), ("full, text encoders streamed", 31.0), ("24gb", 24.0), ("16gb", 16.0), ("low_vram", 0.0))


class NoFP8(RuntimeError):
    """FP8 weights asked for where the hardware has no FP8 matmul."""


def check_fp8(device) -> None:
    gpu = card(device)
    if gpu is None or not gpu["fp8"]:
        what = f"{gpu['name']} (compute capability {gpu['capability']})" if gpu else "the CPU"
        raise NoFP8(f"memory 24gb puts InfU's linear layers in FP8, which needs a GPU of compute capability 8.9+ "
                    f"(Ada, Hopper); this is {what}: use memory 16gb (8-bit weights) or low_vram")


def resolve(mode: str, device, free: float | None = None, fp8: bool | None = None) -> tuple[MemoryPlan, str]:
    """The plan for ``mode`` on ``device`` and a line saying what was chosen. ``auto`` reads the free
    memory and FP8 support (``free``/``fp8`` given: as measured elsewhere); on the CPU nothing is offloaded.
    A plan the hardware cannot run is refused here, before any weight loads (``NoFP8``)."""
    if mode not in MODES:
        raise ValueError(f"memory must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "auto":
        if PLANS[mode].weights == "fp8":
            check_fp8(device)
        return PLANS[mode], f"memory {mode}"
    gpu = card(device)
    if free is None:
        if gpu is None:
            return PLANS["full"], "memory auto: full (on the CPU nothing is offloaded)"
        free = gpu["free_gib"]
    if fp8 is None:
        fp8 = bool(gpu and gpu["fp8"])
    for name, peak in PEAKS:
        if free >= peak and (name != "24gb" or fp8):
            return PLANS[name], f"memory auto: {name} ({free:.1f} GiB free; it needs about {peak:g})"
    raise AssertionError("low_vram fits any card")
