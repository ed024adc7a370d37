"""Watermark stage (``watermark``): rejects photos with visible overlaid text or logos.

Backends:
- ``ocr`` (offline default): reads the text on the analysis image with PP-OCRv4
  (inside the ``rapidocr-onnxruntime`` wheel) and scores it with the rules in
  ``curation/watermark_ocr.py`` (stock/URL/copyright vocabulary, text over the
  face or the centre, tiled repeats, semi-transparent strokes). The score goes
  to ``watermark``, the strongest rule and the text it read to
  ``watermark_text`` ("vocabulary: 'Shutterstock' (shutterstock)").
- ``transformers``: an image classifier from a local folder (``model``), scored
  on the probability of ``label``.
- ``none``: does not run; the column stays null and the summary says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from curation.options import between
from curation.records import analysis_image
from curation.stage import Stage, score_and_threshold
from curation.watermark_ocr import OcrOptions
from infu_model.hub import FOLDER, ModelRef, Need


@dataclass(frozen=True)
class WatermarkOptions:
    backend: Literal["ocr", "transformers", "none"]
    threshold: float = between(0, 1)
    device: str
    ocr: OcrOptions
    model: ModelRef | None   # transformers: an image classifier (path, hf://... ; infu_model/hub.py)
    label: str          # transformers: the label that means "has a watermark"


class WatermarkStage(Stage):
    name = "watermark"
    reasons = ("watermark",)
    Options = WatermarkOptions

    @property
    def enabled(self) -> bool:
        return self.opts.backend != "none"

    def models(self) -> list[tuple[str, str, str]]:
        if not self.enabled:
            return []
        if self.opts.backend == "ocr":
            return [("PP-OCR detector + recogniser", self.device, "onnxruntime")]
        return [(f"classifier {self.opts.model}", self.device, "torch")]

    def needs(self) -> list:
        return Need.of(self.opts.model, FOLDER, "watermark classifier") if self.opts.backend == "transformers" else []

    def setup(self) -> None:
        if self.opts.backend == "ocr":
            from curation.watermark_ocr import OcrReader

            ocr = self.opts.ocr
            self.model = OcrReader(ocr.det_side, self.device, ocr.threads, ocr.min_confidence, ocr.equalize)
        else:
            from curation.classifier import ImageClassifier

            self.model = ImageClassifier(self.opts.model, self.opts.label, self.device)

    def report(self) -> dict:
        if not self.enabled:
            return {"ran": False, "note": "backend: none (stages: watermark); the watermark column stays null"}
        o = self.opts
        return {"ran": True, "backend": o.backend, "threshold": o.threshold,
                **({"model": o.model} if o.backend == "transformers" else {})}

    def process(self, rows: list[dict]) -> None:
        images = [analysis_image(r) for r in rows]
        o = self.opts
        if o.backend == "transformers":
            score_and_threshold(rows, self.model.scores(images), "watermark", o.threshold, "watermark")
            return
        from curation.watermark_ocr import judge

        for row, rgb in zip(rows, images):
            verdict = judge(self.model(rgb), rgb, face_box(row, rgb), o.ocr)
            row["watermark_text"] = verdict.describe()
            score_and_threshold([row], [verdict.score], "watermark", o.threshold, "watermark")


def face_box(row: dict, rgb) -> tuple[float, ...] | None:
    """The main face's box (original pixels, from the face stage) in the analysis image's pixels."""
    if row.get("bbox") is None or not row.get("width"):
        return None
    s = rgb.shape[1] / row["width"]
    return tuple(float(v) * s for v in row["bbox"])
