"""Watermark stage (``watermark``): a transformers image classifier from a local
folder (``model``), scored on the probability of ``label``, rejecting at
``threshold``.

Nothing that ships offline detects watermarks. With ``backend: none`` (the
default when no model is configured) the stage does not run at all: the
``watermark`` column stays null and the summary and ``stats.json`` say the
filter did not run. No score is ever made up.
"""
from __future__ import annotations

from curation.records import analysis_image
from curation.registry import register
from curation.stage import Stage, score_and_threshold


@register
class WatermarkStage(Stage):
    name = "watermark"
    reasons = ("watermark",)
    default_resources = {"num_cpus": 0.25, "batch_size": 16, "concurrency": 1}

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.backend = self.cfg.get("backend") or ("transformers" if self.cfg.get("model") else "none")
        self.threshold = float(self.cfg.get("threshold", 0.5))
        self.model = None

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def setup(self) -> None:
        if self.backend != "transformers":
            raise ValueError(f"unknown watermark backend {self.backend!r} (transformers or none)")
        from curation.classifier import ImageClassifier

        self.model = ImageClassifier.from_stage_config(self.cfg, "watermark")

    def report(self) -> dict:
        if not self.enabled:
            return {"ran": False, "note": "no watermark classifier configured (stages: watermark: model); "
                                          "nothing offline detects watermarks, so the column stays null"}
        return {"ran": True, "backend": self.backend, "model": self.cfg.get("model"), "threshold": self.threshold}

    def process(self, rows: list[dict]) -> None:
        scores = self.model.scores([analysis_image(r) for r in rows])
        score_and_threshold(rows, scores, "watermark", self.threshold, "watermark")
