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

from curation.records import analysis_image
from curation.stage import Stage, score_and_threshold


class WatermarkStage(Stage):
    name = "watermark"
    reasons = ("watermark",)
    default_resources = {"num_cpus": 0.25, "batch_size": 16, "concurrency": 1}

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.backend = self.cfg.get("backend") or ("transformers" if self.cfg.get("model") else "ocr")
        self.threshold = float(self.cfg.get("threshold", 0.5))
        self.ocr = self.cfg.get("ocr") or {}
        self.model = None

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def setup(self) -> None:
        if self.backend == "ocr":
            from curation.watermark_ocr import OcrReader

            self.model = OcrReader(int(self.ocr.get("det_side", 736)), self.device, int(self.ocr.get("threads", 1)),
                                   float(self.ocr.get("min_confidence", 0.5)))
        elif self.backend == "transformers":
            from curation.classifier import ImageClassifier

            self.model = ImageClassifier.from_stage_config(self.cfg, "watermark")
        else:
            raise ValueError(f"unknown watermark backend {self.backend!r} (ocr, transformers or none)")

    def report(self) -> dict:
        if not self.enabled:
            return {"ran": False, "note": "backend: none (stages: watermark); the watermark column stays null"}
        return {"ran": True, "backend": self.backend, "threshold": self.threshold,
                **({"model": self.cfg.get("model")} if self.backend == "transformers" else {})}

    def process(self, rows: list[dict]) -> None:
        images = [analysis_image(r) for r in rows]
        if self.backend == "transformers":
            score_and_threshold(rows, self.model.scores(images), "watermark", self.threshold, "watermark")
            return
        from curation.watermark_ocr import judge

        for row, rgb in zip(rows, images):
            verdict = judge(self.model(rgb), rgb, face_box(row, rgb), vocabulary=self.ocr.get("vocabulary"),
                            weights=self.ocr.get("rules"), fuzzy=float(self.ocr.get("fuzzy", 0.8)))
            row["watermark_text"] = verdict.describe()
            score_and_threshold([row], [verdict.score], "watermark", self.threshold, "watermark")


def face_box(row: dict, rgb) -> tuple[float, ...] | None:
    """The main face's box (original pixels, from the face stage) in the analysis image's pixels."""
    if row.get("bbox") is None or not row.get("width"):
        return None
    s = rgb.shape[1] / row["width"]
    return tuple(float(v) * s for v in row["bbox"])
