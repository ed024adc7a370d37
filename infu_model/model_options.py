"""The one description of an InfU model to generate with: which weights, and how they sit in memory.

A synth or eval job's ``model`` block is parsed into it, `infu generate` and `infu app` build it from
their flags, and ``load()`` hands it to ``infu_model.pipeline.load_pipeline``. Its models are model
references (infu_model/hub.py); ``needs()`` lists them for the driver to fetch before any work.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infu_model import hub
from infu_model.faces import analyzer_needs
from infu_model.hub import DIFFUSERS, FOLDER, ModelRef, Need, infu_weights
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
        return pipeline_needs(self.base, self.path, self.variant, self.faces or None, loras)

    def load(self, loras=(), log=None):
        """The ``InfUPipeline`` it describes, ready to run (``log`` hears the memory mode chosen)."""
        from infu_model.pipeline import load_pipeline

        return load_pipeline(self.base, self.path, self.variant, self.dtype, self.device, self.faces or None,
                             list(loras), memory=self.memory, compile=self.compile, log=log)


def infu_folder(infu_path, variant: str = "aes_stage2", fetch: bool | None = None) -> tuple[Path, Path]:
    """(the weights' folder, the folder holding ``InfuseNetModel/`` or ``infusenet/``) of a model reference
    to InfU weights: a published ``infu_flux_v1.0`` folder (``variant`` picks one), one variant folder,
    or our native layout."""
    root = hub.resolve(infu_path, infu_weights(variant), fetch)
    return root, (root / variant if (root / variant / "InfuseNetModel").is_dir() else root)


def face_backend_of(infu_path, variant: str = "aes_stage2") -> str:
    """The face backend the weights were trained with: our ``infu.json`` says; the published ones use insightface."""
    root, _ = infu_folder(infu_path, variant)
    meta = root / "infu.json"
    return json.loads(meta.read_text()).get("face_backend", "insightface") if meta.is_file() else "insightface"


def pipeline_needs(base, infu, variant: str = "aes_stage2", faces: dict | None = None, loras=()) -> list[Need]:
    """Every model ``load_pipeline`` reads: the FLUX base (its diffusers folders only), the InfU variant,
    then the face backend those weights need (unless ``faces`` names one), and the LoRAs."""
    def face_models(_):
        return analyzer_needs({"backend": face_backend_of(infu, variant), **(faces or {})})

    return [*Need.of(base, DIFFUSERS, "FLUX base"),
            *Need.of(infu, infu_weights(variant), f"InfU weights ({variant})", face_models),
            *(n for path, _ in loras for n in Need.of(path, FOLDER, "LoRA"))]
