"""Models that ship inside this package, named ``infu://NAME`` (infu_model/hub.py).

``SHA256`` records every file of each: a load checks them, and ``infu models verify`` says which
differ. ``watermark-classifier`` is made by ``scripts/train_watermark_classifier.py`` (the same bytes
from the same seed, torch version and thread count); its validation figures are in its
``validation.json`` and docs/curate.md.
"""
from __future__ import annotations

from pathlib import Path

SHA256: dict[str, dict[str, str]] = {
    "watermark-classifier": {
        "config.json": "81fe5b0d0cce0a4054b6df0b7839f5bad5ea25ed97770f17368be10c1f98cdde",
        "diffusion_pytorch_model.safetensors": "a820771d0f713be5ac65bd1ea938f1df9beaa3ab8ed191b6766b190cb8b44d06",
    },
}


def folder(name: str) -> Path:
    return Path(__file__).parent / name
