"""A transformers image classifier, named by a model reference, as a score for one label.

Used by the NSFW and watermark stages for production models (e.g. a ViT
fine-tuned for NSFW or watermark detection). The folder comes from
``infu_model.hub.resolve`` (a path, or the Hub cache the job's driver filled);
transformers itself loads with ``local_files_only``. The slow (numpy/PIL) image
processor is used so no torchvision is needed.
"""
from __future__ import annotations

import numpy as np

from infu_model.hub import FOLDER, resolve
from infu_model.runtime import torch_device


def load_classifier(path, label: str, device: str = "cpu"):
    """The classifier a folder holds: ours (``curation/watermark_net.py``'s WatermarkNet, as
    ``infu://watermark-classifier`` ships it) or a transformers image classifier; both give
    ``predict(images) -> (probabilities of label, top labels)``."""
    import json

    p = resolve(path, FOLDER)
    config = p / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("_class_name") == "WatermarkNet":
        from curation.watermark_net import WatermarkNetScorer

        return WatermarkNetScorer(p, label, device)
    return ImageClassifier(p, label, device)


class ImageClassifier:
    def __init__(self, path: str, label: str, device: str = "cpu", dtype: str = "float32"):
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        p, device = resolve(path, FOLDER), torch_device(device)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"image classifier not found: {p} (a transformers folder with config.json)")
        self.torch = torch
        self.processor = AutoImageProcessor.from_pretrained(p, local_files_only=True, use_fast=False)
        self.model = AutoModelForImageClassification.from_pretrained(
            p, local_files_only=True, dtype=getattr(torch, dtype)).to(device).eval()
        self.device = device
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        matches = [i for i, name in id2label.items() if name.lower() == label.lower()]
        if not matches:
            raise ValueError(f"label {label!r} is not one of the model's labels {sorted(id2label.values())}")
        self.index = matches[0]
        self.multi_label = self.model.config.problem_type == "multi_label_classification"

    def scores(self, images: list[np.ndarray]) -> list[float]:
        """Probability of the configured label for each RGB image."""
        return self.predict(images)[0]

    def predict(self, images: list[np.ndarray]) -> tuple[list[float], list[str]]:
        """For each RGB image: the configured label's probability, and the label the model ranks first."""
        with self.torch.no_grad():
            inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
            logits = self.model(**inputs).logits.float()
        probs = logits.sigmoid() if self.multi_label else logits.softmax(-1)
        top = [self.model.config.id2label[int(i)] for i in probs.argmax(-1).cpu().tolist()]
        return probs[:, self.index].cpu().tolist(), top
