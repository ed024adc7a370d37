"""Watermark stage (``watermark``): rejects photos with visible overlaid text or logos, by one or
two opinions (``combine``):

- ``ocr``: reads the text on the analysis image with PP-OCRv4
  (inside the ``rapidocr-onnxruntime`` wheel) and scores it with the rules in
  ``curation/watermark_ocr.py`` (stock/URL/copyright vocabulary, text over the
  face or the centre, tiled repeats, semi-transparent strokes); the strongest
  rule and the text it read go to ``watermark_text`` ("vocabulary: 'Shutterstock'
  (shutterstock)").
- ``classifier``: an image classifier (``classifier.model``): ours, which ships in the
  package (``infu://watermark-classifier``, ``curation/watermark_net.py``: where on the
  photo an overlay shows, trained by ``scripts/train_watermark_classifier.py``), or any
  transformers image classifier, scored on the probability of ``classifier.label``;
  that probability goes to ``watermark_classifier`` and the label it ranks first to
  ``watermark_label``. It sees what OCR cannot read (a logo, translucent words across
  a face).
- ``any`` (the default, offline: both models ship in wheels): both; a photo either one flags
  is rejected.
- ``none``: does not run; the columns stay null and the summary says so.

``watermark`` is the deciding score: the larger of the opinions that ran, rejected
at ``threshold``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from curation.engine import ConfigError, Stage, between, score_and_threshold
from curation.records import ANALYSIS, analysis_image
from curation.watermark_ocr import OcrOptions
from infu_model.hub import FOLDER, ModelRef, Need


@dataclass(frozen=True)
class WatermarkClassifierOptions:
    model: ModelRef | None   # infu://watermark-classifier, or a transformers image classifier (a folder, hf://...)
    label: str               # the label that means "has a watermark"


@dataclass(frozen=True)
class WatermarkOptions:
    combine: Literal["ocr", "classifier", "any", "none"]
    threshold: float = between(0, 1)
    device: str
    ocr: OcrOptions
    classifier: WatermarkClassifierOptions

    def __post_init__(self):
        if self.combine in ("classifier", "any") and self.classifier.model is None:
            raise ConfigError(f"stages.watermark: combine: {self.combine} needs classifier.model (an image classifier: a folder or "
                             "hf://OWNER/NAME)")


class WatermarkStage(Stage):
    name = "watermark"
    reasons = ("watermark",)
    reads = ANALYSIS
    writes = (
        pa.field("watermark", pa.float32()),              # the larger opinion of those that ran
        pa.field("watermark_text", pa.string()),          # the OCR rule that fired strongest and the text read
        pa.field("watermark_classifier", pa.float32()),   # the classifier's probability of its label
        pa.field("watermark_label", pa.string()),         # the label the classifier ranks first
    )
    scores = ("watermark", "watermark_classifier")
    Options = WatermarkOptions

    @property
    def enabled(self) -> bool:
        return self.opts.combine != "none"

    @property
    def opinions(self) -> tuple[str, ...]:
        return {"ocr": ("ocr",), "classifier": ("classifier",), "any": ("ocr", "classifier")}.get(self.opts.combine, ())

    def models(self) -> list[tuple[str, str, str]]:
        names = {"ocr": ("PP-OCR detector + recogniser", self.device, "onnxruntime"),
                 "classifier": (f"classifier {self.opts.classifier.model}", self.device, "torch")}
        return [names[o] for o in self.opinions]

    def needs(self) -> list:
        if "classifier" not in self.opinions:
            return []
        return Need.of(self.opts.classifier.model, FOLDER, "watermark classifier")

    def setup(self) -> None:
        self.ocr = self.classifier = None
        if "ocr" in self.opinions:
            from curation.watermark_ocr import OcrReader

            ocr = self.opts.ocr
            self.ocr = OcrReader(ocr.det_side, self.device, ocr.threads, ocr.min_confidence, ocr.equalize)
        if "classifier" in self.opinions:
            from curation.classifier import load_classifier

            c = self.opts.classifier
            self.classifier = load_classifier(c.model, c.label, self.device)

    def report(self) -> dict:
        if not self.enabled:
            return {"ran": False, "note": "combine: none (stages: watermark); the watermark columns stay null"}
        o = self.opts
        return {"ran": True, "combine": o.combine, "threshold": o.threshold,
                **({"model": str(o.classifier.model)} if "classifier" in self.opinions else {})}

    def process(self, rows: list[dict]) -> None:
        images = [analysis_image(r) for r in rows]
        opinions = []
        if self.ocr is not None:
            from curation.watermark_ocr import judge

            scores = []
            for row, rgb in zip(rows, images):
                verdict = judge(self.ocr(rgb), rgb, face_box(row, rgb), self.opts.ocr)
                row["watermark_text"] = verdict.describe()
                scores.append(verdict.score)
            opinions.append(scores)
        if self.classifier is not None:
            scores, labels = self.classifier.predict(images)
            for row, p, label in zip(rows, scores, labels):
                row["watermark_classifier"], row["watermark_label"] = float(p), label
            opinions.append(scores)
        score_and_threshold(rows, [max(s) for s in zip(*opinions)], "watermark", self.opts.threshold, "watermark")


def face_box(row: dict, rgb) -> tuple[float, ...] | None:
    """The main face's box (original pixels, from the face stage) in the analysis image's pixels."""
    if row.get("bbox") is None or not row.get("width"):
        return None
    s = rgb.shape[1] / row["width"]
    return tuple(float(v) * s for v in row["bbox"])
