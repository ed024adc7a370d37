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


@dataclass(frozen=True)
class WatermarkOptions:
    backend: Literal["ocr", "transformers", "none"]
    threshold: float = between(0, 1)
    device: str
    ocr: OcrOptions
    model: str | None   # transformers: local image-classifier folder
    label: str          # transformers: the label that means "has a watermark"


class WatermarkStage(Stage):
    name = "watermark"
    reasons = ("watermark",)
    default_resources = {"num_cpus": 0.25, "batch_size": 16, "concurrency": 1}
    Options = WatermarkOptions
    defaults_in = ("curate", "stages")

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.backend, self.threshold, self.ocr = self.opts.backend, self.opts.threshold, self.opts.ocr
        self.model = None

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def setup(self) -> None:
        if self.backend == "ocr":
            from curation.watermark_ocr import OcrReader

            self.model = OcrReader(self.ocr.det_side, self.device, self.ocr.threads, self.ocr.min_confidence,
                                   self.ocr.equalize)
        else:
            from curation.classifier import ImageClassifier

            self.model = ImageClassifier.from_stage_config(self.cfg, "watermark")

    def report(self) -> dict:
        if not self.enabled:
            return {"ran": False, "note": "backend: none (stages: watermark); the watermark column stays null"}
        return {"ran": True, "backend": self.backend, "threshold": self.threshold,
                **({"model": self.opts.model} if self.backend == "transformers" else {})}

    def process(self, rows: list[dict]) -> None:
        images = [analysis_image(r) for r in rows]
        if self.backend == "transformers":
            score_and_threshold(rows, self.model.scores(images), "watermark", self.threshold, "watermark")
            return
        from curation.watermark_ocr import judge

        for row, rgb in zip(rows, images):
            verdict = judge(self.model(rgb), rgb, face_box(row, rgb), self.ocr)
            row["watermark_text"] = verdict.describe()
            score_and_threshold([row], [verdict.score], "watermark", self.threshold, "watermark")


def face_box(row: dict, rgb) -> tuple[float, ...] | None:
    """The main face's box (original pixels, from the face stage) in the analysis image's pixels."""
    if row.get("bbox") is None or not row.get("width"):
        return None
    s = rgb.shape[1] / row["width"]
    return tuple(float(v) * s for v in row["bbox"])
