"""NSFW stage (``nsfw``).

Backends:
- ``nudenet`` (offline default): the ONNX detector inside the nudenet wheel.
  The score is the highest confidence among the configured ``classes``
  (exposed genitalia, breasts, buttocks, anus by default); a row is rejected
  when it reaches ``threshold``.
- ``transformers``: an image classifier from a local folder (``model``), scored
  on the probability of ``label``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from curation.engine import Stage, between, score_and_threshold
from curation.records import ANALYSIS, analysis_image
from infu_model.hub import FOLDER, ModelRef, Need
from infu_model.runtime import ort_session


@dataclass(frozen=True)
class NSFWOptions:
    backend: Literal["nudenet", "transformers"]
    threshold: float = between(0, 1)
    classes: tuple[str, ...]  # nudenet's labels that count
    threads: int = between(1)  # nudenet: onnxruntime threads per actor
    device: str               # cpu | cuda[:N]
    model: ModelRef | None    # transformers: an image classifier (path, hf://... ; infu_model/hub.py)
    label: str                # transformers: the label that means NSFW


class NSFWStage(Stage):
    name = "nsfw"
    reasons = ("nsfw",)
    reads = ANALYSIS
    writes = (pa.field("nsfw", pa.float32()),)
    scores = ("nsfw",)
    Options = NSFWOptions

    def models(self) -> list[tuple[str, str, str]]:
        if self.opts.backend == "nudenet":
            return [("nudenet", self.device, "onnxruntime")]
        return [(f"classifier {self.opts.model}", self.device, "torch")]

    def needs(self) -> list:
        return Need.of(self.opts.model, FOLDER, "NSFW classifier") if self.opts.backend == "transformers" else []

    def setup(self) -> None:
        if self.opts.backend == "nudenet":
            from nudenet import NudeDetector

            self.model = NudeDetector()
            # nudenet's session takes every core; in a pool of one actor per core that oversubscribes them
            self.model.onnx_session = ort_session(self.model.onnx_session._model_path, self.device, self.opts.threads)
        else:
            from curation.classifier import ImageClassifier

            self.model = ImageClassifier(self.opts.model, self.opts.label, self.device)

    def report(self) -> dict:
        return {"ran": True, "backend": self.opts.backend, "threshold": self.opts.threshold}

    def score(self, rgb: np.ndarray) -> float:
        """nudenet reads BGR through an RGBA->BGR conversion, so it is handed RGBA."""
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        hits = [d["score"] for d in self.model.detect(rgba) if d["class"] in self.opts.classes]
        return float(max(hits, default=0.0))

    def process(self, rows: list[dict]) -> None:
        images = [analysis_image(r) for r in rows]
        if self.opts.backend == "transformers":
            scores = self.model.scores(images)
        else:
            scores = [self.score(im) for im in images]
        score_and_threshold(rows, scores, "nsfw", self.opts.threshold, "nsfw")
