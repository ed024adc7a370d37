"""Our watermark detector: a small fully convolutional net that marks, for every 16x16 cell of the
photo (scaled to a long side of ``side``), the probability that an overlay covers it; a photo's
score comes from the mean logit of its ``top_k`` most marked cells. Trained on where marks are (the overlay's
alpha, dense labels) rather than on a yes/no per photo, so a few photos teach it what overlaid
strokes look like against signs, prints, captions and patterns that belong to the photo
(``scripts/train_watermark_classifier.py``; it ships as ``infu://watermark-classifier``).

Saved as diffusers saves a model (``config.json`` + ``diffusion_pytorch_model.safetensors``,
``from_pretrained`` / ``save_pretrained``), but loaded with torch and safetensors alone: every curate
actor loads it, and importing diffusers would cost each one about 5 s. ``WatermarkNetScorer`` gives it
the interface of ``curation.classifier.ImageClassifier``.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LABELS = ("clean", "watermark")
CONFIG, WEIGHTS = "config.json", "diffusion_pytorch_model.safetensors"


def _block(cin: int, cout: int, stride: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class WatermarkNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (24, 40, 64, 96), side: int = 384, top_k: int = 4,
                 offset: float = 0.0):
        super().__init__()
        self.config = SimpleNamespace(widths=list(widths), side=side, top_k=top_k, offset=offset)
        layers, cin = [], 3
        for w in widths:  # each stage halves the resolution: 4 stages, 16x16 cells
            layers += [_block(cin, w, 2), _block(w, w, 1)]
            cin = w
        layers += [_block(cin, cin, 1, dilation=2), _block(cin, cin, 1, dilation=4)]  # context: plate or photo?
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 1, 1)

    @classmethod
    def from_pretrained(cls, path) -> "WatermarkNet":
        """The net a folder holds (what ``save_pretrained`` wrote), in eval mode."""
        from safetensors.torch import load_file

        path = Path(path)
        settings = {k: v for k, v in json.loads((path / CONFIG).read_text()).items() if not k.startswith("_")}
        try:
            net = cls(**settings)
        except TypeError as e:
            raise ValueError(f"{path / CONFIG}: not a WatermarkNet config ({e})") from None
        net.load_state_dict(load_file(path / WEIGHTS))
        return net.eval()

    def save_pretrained(self, path) -> None:
        """``config.json`` (its settings, as diffusers writes a config) and the safetensors weights."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **vars(self.config)}
        (path / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, path / WEIGHTS, metadata={"format": "pt"})

    @property
    def cell(self) -> int:
        return 2 ** len(self.config.widths)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised RGB -> [B, 1, H/cell, W/cell] logits (an overlay in this cell)."""
        return self.head(self.features(pixels))

    def photo_logit(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, 1, h, w] cell logits -> [B]: the mean of the top_k cells' (a mark covers several)."""
        z = logits.flatten(1)
        return z.topk(min(self.config.top_k, z.shape[1]), dim=1).values.mean(1)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, 1, h, w] cell logits -> [B] the photo's probability of a mark; ``offset`` is set after
        training so that whole clean photos of the training split score under 0.5 (see the script)."""
        return (self.photo_logit(logits) - self.config.offset).sigmoid()

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """An HxWx3 uint8 photo scaled to a long side of ``side`` (sides rounded to whole cells),
        normalised: [1, 3, h, w]."""
        import cv2

        h, w = rgb.shape[:2]
        s = self.config.side / max(h, w)
        size = (max(self.cell, round(w * s / self.cell) * self.cell), max(self.cell, round(h * s / self.cell) * self.cell))
        small = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x = (small.astype(np.float32) / 255 - MEAN) / STD
        return torch.from_numpy(x.transpose(2, 0, 1).copy()).unsqueeze(0).float()


class WatermarkNetScorer:
    """``WatermarkNet`` behind ``ImageClassifier``'s interface (labels ``clean`` and ``watermark``)."""

    def __init__(self, path, label: str, device: str = "cpu"):
        from infu_model.runtime import torch_device

        if label not in LABELS:
            raise ValueError(f"label {label!r} is not one of the model's labels {list(LABELS)}")
        self.device = torch_device(device)
        self.net = WatermarkNet.from_pretrained(path).to(self.device).eval()
        self.flip = label == "clean"

    def predict(self, images: list[np.ndarray]) -> tuple[list[float], list[str]]:
        """For each RGB image: the label's probability, and the label ranked first. One photo at a time
        (each keeps its own aspect)."""
        out = []
        with torch.no_grad():
            for rgb in images:
                out.append(float(self.net.score(self.net(self.net.prepare(rgb).to(self.device)))[0]))
        top = [LABELS[p >= 0.5] for p in out]
        return ([1 - p for p in out] if self.flip else out), top
