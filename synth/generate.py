"""Generation stage: the stage-1 InfU pipeline (plus LoRAs) turns planned jobs into targets.

One pipeline load per actor. A batch's jobs are grouped by source: the identity
embedding is taken once per source (the SPSS record's own when it was made by the
backend these weights expect, else computed from the source image), and each
group's prompts x seeds run as batched pipeline calls of ``images_per_call``.
A seed fully determines its image, so a resumed run regenerates the same target.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from itertools import groupby
from typing import TYPE_CHECKING, Literal

import numpy as np

from curation.engine import Resources, Stage, between, quarantine, reject
from infu_model import images
from infu_model.faces import stored_embedding
from infu_model.hub import ModelRef
from infu_model.model_options import ModelOptions
from synth.records import encode

if TYPE_CHECKING:  # the job's driver reads this module; its workers import torch when they load the model
    import torch


@dataclass(frozen=True)
class LoraOptions:
    path: ModelRef                    # a .safetensors file or a folder: path, hf://... or URL
    weight: float = between(-10, 10, default=1.0)


@dataclass(frozen=True)
class InfuseNetOptions:
    scale: float = between(0)
    start: float = between(0, 1)
    end: float = between(0, 1)


@dataclass(frozen=True)
class GenerationSettings:
    """What decides a target besides its prompt, seed and model."""
    width: int = between(16, 4096)
    height: int = between(16, 4096)
    steps: int = between(1)
    guidance: float = between(0)
    infusenet: InfuseNetOptions
    control: Literal["none", "source"]
    image_format: Literal["png", "jpeg", "webp"]
    images_per_call: int = between(1)


@dataclass(frozen=True)
class GenerationBlock(GenerationSettings):
    """A synth or eval job's ``generation`` block: the settings and the generating pool."""
    resources: Resources


@dataclass(frozen=True)
class GenerateOptions:
    model: ModelOptions
    generation: GenerationSettings
    loras: tuple[LoraOptions, ...]


def settings_of(o: GenerateOptions) -> dict:
    """What decides a target besides prompt and seed (stored with every pair)."""
    g = o.generation
    return {"width": g.width, "height": g.height, "steps": g.steps, "guidance": g.guidance,
            "infusenet_scale": g.infusenet.scale, "infusenet_start": g.infusenet.start,
            "infusenet_end": g.infusenet.end, "control": g.control, "dtype": o.model.dtype}


def generate_stage(model: ModelOptions, generation: GenerationBlock, loras: tuple[LoraOptions, ...]) -> "GenerateStage":
    """The generating stage of a synth or eval job, from its model, generation and loras blocks."""
    settings = GenerationSettings(**{f.name: getattr(generation, f.name) for f in fields(GenerationSettings)})
    return GenerateStage(GenerateOptions(model, settings, loras), generation.resources)


class GenerateStage(Stage):
    name = "generate"
    reasons = ("source_no_face",)
    gpu_share = 1.0  # FLUX + InfuseNet: a GPU per actor
    Options = GenerateOptions

    def __init__(self, opts, resources, label=None):
        super().__init__(opts, resources, label)
        self.settings = settings_of(self.opts)
        self.loras = [(str(x.path), x.weight) for x in self.opts.loras]
        self.model_name = f"{self.opts.model.path}:{self.opts.model.variant}"

    @property
    def device(self) -> str:
        return self.opts.model.device

    def models(self) -> list[tuple[str, str, str]]:
        return [(f"InfU on FLUX, memory {self.opts.model.memory}", self.device, "torch")]

    def needs(self) -> list:
        return self.opts.model.needs(self.loras)

    def setup(self) -> None:
        import logging

        # CLIP only gives FLUX the pooled prompt; truncating long prompts there is by design, and
        # diffusers would say so for every batch of a long run
        logging.getLogger("diffusers.pipelines.flux.pipeline_flux").setLevel(logging.ERROR)
        self.pipe = self.opts.model.load(self.loras, log=print)  # what memory auto chose: the worker log
        self.pipe.set_progress_bar_config(disable=True)  # the job's own progress is per row, not per step

    def report(self) -> dict:
        return {"ran": True, "model": self.model_name, "loras": len(self.loras), **self.settings}

    def process(self, rows: list[dict]) -> None:
        for _, group in groupby(rows, key=lambda r: r["source_id"]):
            group = list(group)
            try:
                self._source(group)
            except Exception as e:  # noqa: BLE001 - one unusable source must not regenerate the whole batch
                for r in group:
                    if r["target_image"] is None:
                        quarantine(r, "generate_error", e)

    def embedding(self, row: dict) -> torch.Tensor:
        from infu_model.pipeline import NoFaceError

        stored = stored_embedding(row["_source_embedding"], row["_source_backend"], self.pipe.faces,
                                  self.pipe.image_proj.config.embedding_dim)
        if stored is not None:
            import torch

            return torch.from_numpy(stored)[None]
        if row["_source_image"] is None:
            raise NoFaceError("the source record has no image")
        return self.pipe.id_embedding(images.rgb_image(row["_source_image"]))

    def _source(self, rows: list[dict]) -> None:
        from infu_model.pipeline import NoFaceError

        try:
            emb = self.embedding(rows[0])
        except NoFaceError:
            for r in rows:
                reject(r, "source_no_face")
            return
        s, per_call = self.settings, self.opts.generation.images_per_call
        control = None
        if s["control"] == "source":
            control = images.rgb_image(rows[0]["_source_image"])
        for i in range(0, len(rows), per_call):
            chunk = rows[i:i + per_call]
            out = self.pipe(prompt=[r["prompt"] for r in chunk], seed=[int(r["seed"]) for r in chunk],
                            id_embedding=emb, control_image=control, width=s["width"], height=s["height"],
                            num_inference_steps=s["steps"], guidance_scale=s["guidance"],
                            infusenet_conditioning_scale=s["infusenet_scale"],
                            infusenet_guidance_start=s["infusenet_start"], infusenet_guidance_end=s["infusenet_end"],
                            output_type="np").images
            for r, img in zip(chunk, out):
                self._fill(r, (np.clip(img, 0, 1) * 255).round().astype(np.uint8), emb)

    def _fill(self, row: dict, rgb: np.ndarray, emb: torch.Tensor) -> None:
        fmt = self.opts.generation.image_format
        row.update(target_image=encode(rgb, fmt), image_format=fmt, height=rgb.shape[0], width=rgb.shape[1],
                   bucket=f"{rgb.shape[1]}x{rgb.shape[0]}", model=self.model_name, settings=json.dumps(self.settings),
                   loras=[{"path": p, "weight": w} for p, w in self.loras], face_swap="none",
                   captions=[{"source": "prompt", "text": row["prompt"]}],
                   source_id_embedding=emb[0].tolist(), id_backend=self.pipe.faces.name)
