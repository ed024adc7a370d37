"""The one description of an InfU model to generate with: which weights, and how they sit in memory.

A synth or eval job's ``model`` block is parsed into it, `infu generate` and `infu app` build it from
their flags, and ``load()`` hands it to ``infu_model.pipeline.load_pipeline``. Its models are model
references (infu_model/hub.py); ``needs()`` lists them for the driver to fetch before any work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infu_model.hub import ModelRef
from infu_model.memory import MODES
from infu_model.published import VARIANTS


@dataclass(frozen=True)
class ModelOptions:
    base: ModelRef | None             # FLUX.1-dev in diffusers layout (--base)
    path: ModelRef | None             # InfU weights: published folder, one variant, or ours (--model / --infu)
    variant: Literal[VARIANTS]        # the published variant, where ``path`` holds both
    dtype: Literal["bfloat16", "float16", "float32"]
    device: str                       # cuda or cpu (the CPU when no GPU is there)
    memory: Literal[MODES]            # infu_model/memory.py
    compile: bool                     # torch.compile the FLUX blocks
    faces: dict                       # the face backend's block; {}: the one the weights were trained with

    def check(self) -> None:
        """A FLUX base and InfU weights named (they are fetched, or found, before any work)."""
        for key, flag in (("base", "--base"), ("path", "--model")):
            if not getattr(self, key):
                raise ValueError(f"model.{key} is not set: give {flag} or set it in the config")

    def needs(self, loras=()) -> list:
        """The models this description (and ``loras``: (reference, weight) pairs) loads."""
        from infu_model.pipeline import pipeline_needs

        return pipeline_needs(self.base, self.path, self.variant, self.faces or None, loras)

    def load(self, loras=(), log=None):
        """The ``InfUPipeline`` it describes, ready to run (``log`` hears the memory mode chosen)."""
        from infu_model.pipeline import load_pipeline

        return load_pipeline(self.base, self.path, self.variant, self.dtype, self.device, self.faces or None,
                             list(loras), memory=self.memory, compile=self.compile, log=log)
