"""Generation stage: the stage-1 InfU pipeline (plus LoRAs) turns planned jobs into targets.

One pipeline load per actor. A batch's jobs are grouped by source: the identity
embedding is taken once per source (the SPSS record's own when it was made by the
backend these weights expect, else computed from the source image), and each
group's prompts x seeds run as batched pipeline calls of ``images_per_call``.
A seed fully determines its image, so a resumed run regenerates the same target.
"""
from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from curation.records import quarantine, reject
from curation.stage import Stage
from infu_model.faces import stored_embedding
from synth.records import SYNTH_ROW_SCHEMA, decode_rgb, encode


def lora_list(cfg: dict) -> list[tuple[str, float]]:
    return [(str(Path(x["path"]).expanduser()), float(x.get("weight", 1.0))) for x in cfg.get("loras") or []]


def settings_of(cfg: dict) -> dict:
    """What decides a target besides prompt and seed (stored with every pair)."""
    inf = cfg.get("infusenet") or {}
    return {"width": int(cfg["width"]), "height": int(cfg["height"]), "steps": int(cfg["steps"]),
            "guidance": float(cfg["guidance"]), "infusenet_scale": float(inf.get("scale", 1.0)),
            "infusenet_start": float(inf.get("start", 0.0)), "infusenet_end": float(inf.get("end", 1.0)),
            "control": cfg.get("control", "none"), "dtype": cfg.get("dtype", "bfloat16")}


class GenerateStage(Stage):
    name = "generate"
    reasons = ("source_no_face",)
    schema = SYNTH_ROW_SCHEMA
    default_resources = {"num_cpus": 1, "num_gpus": 0, "batch_size": 8, "concurrency": 1}
    gpu_share = 1.0  # FLUX + InfuseNet: a GPU per actor

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.settings = settings_of(self.cfg)
        self.loras = lora_list(self.cfg)
        self.model_name = f"{self.cfg.get('model')}:{self.cfg.get('variant', 'aes_stage2')}"
        self.pipe = None

    def setup(self) -> None:
        import logging

        from infu_model.pipeline import load_pipeline

        # CLIP only gives FLUX the pooled prompt; truncating long prompts there is by design, and
        # diffusers would say so for every batch of a long run
        logging.getLogger("diffusers.pipelines.flux.pipeline_flux").setLevel(logging.ERROR)
        c = self.cfg
        self.pipe = load_pipeline(c["base"], c["model"], c.get("variant", "aes_stage2"), c.get("dtype", "bfloat16"),
                                  c.get("device", "cuda"), c.get("faces"), self.loras,
                                  text_encoders=c.get("text_encoders", "gpu"), offload=c.get("offload", "none"),
                                  int8=bool(c.get("int8")), compile=bool(c.get("compile")))

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
            return torch.from_numpy(stored)[None]
        if row["_source_image"] is None:
            raise NoFaceError("the source record has no image")
        return self.pipe.id_embedding(Image.fromarray(decode_rgb(row["_source_image"])))

    def _source(self, rows: list[dict]) -> None:
        from infu_model.pipeline import NoFaceError

        try:
            emb = self.embedding(rows[0])
        except NoFaceError:
            for r in rows:
                reject(r, "source_no_face")
            return
        s, per_call = self.settings, max(1, int(self.cfg.get("images_per_call", 4)))
        control = None
        if s["control"] == "source":
            control = Image.fromarray(decode_rgb(rows[0]["_source_image"]))
        for i in range(0, len(rows), per_call):
            chunk = rows[i:i + per_call]
            images = self.pipe(prompt=[r["prompt"] for r in chunk], seed=[int(r["seed"]) for r in chunk],
                               id_embedding=emb, control_image=control, width=s["width"], height=s["height"],
                               num_inference_steps=s["steps"], guidance_scale=s["guidance"],
                               infusenet_conditioning_scale=s["infusenet_scale"],
                               infusenet_guidance_start=s["infusenet_start"], infusenet_guidance_end=s["infusenet_end"],
                               output_type="np", progress=False)
            for r, img in zip(chunk, images):
                self._fill(r, (np.clip(img, 0, 1) * 255).round().astype(np.uint8), emb)

    def _fill(self, row: dict, rgb: np.ndarray, emb: torch.Tensor) -> None:
        fmt = self.cfg.get("image_format", "png")
        row.update(target_image=encode(rgb, fmt), image_format=fmt, height=rgb.shape[0], width=rgb.shape[1],
                   bucket=f"{rgb.shape[1]}x{rgb.shape[0]}", model=self.model_name, settings=json.dumps(self.settings),
                   loras=[{"path": p, "weight": w} for p, w in self.loras], face_swap="none",
                   captions=[{"source": "prompt", "text": row["prompt"]}],
                   source_id_embedding=emb[0].tolist(), id_backend=self.pipe.faces.name)


def generate_cfg(cfg: dict) -> dict:
    """The generation stage's settings from a synth or eval job config (its model and generation blocks)."""
    m = cfg["model"]
    return {**cfg["generation"], "base": m["base"], "model": m["path"], "variant": m.get("variant", "aes_stage2"),
            "dtype": m.get("dtype", "bfloat16"), "device": m.get("device", "cuda"), "faces": m.get("faces") or None,
            "text_encoders": m.get("text_encoders", "gpu"), "offload": m.get("offload", "none"),
            "compile": m.get("compile", False), "int8": m.get("int8", False), "loras": cfg.get("loras") or []}


def check_cfg(cfg: dict) -> None:
    """The job config names a FLUX base and InfU weights that exist (checked before any work)."""
    m = cfg["model"]
    for key, flag in (("base", "--base"), ("path", "--model")):
        if not m.get(key):
            raise ValueError(f"model.{key} is not set: give {flag} or set it in the config")
        if not Path(m[key]).expanduser().exists():
            raise FileNotFoundError(f"model.{key} not found: {m[key]}")
