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
        "config.json": "9a3e32feb6149534eeda5347019ca8445168783990b814d92c3e3efd75abf452",
        "diffusion_pytorch_model.safetensors": "a820771d0f713be5ac65bd1ea938f1df9beaa3ab8ed191b6766b190cb8b44d06",
    },
}


def folder(name: str) -> Path:
    return Path(__file__).parent / name
