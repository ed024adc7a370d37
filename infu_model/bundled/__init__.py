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
        "config.json": "0c700e0f5a475bbaf5c5d86f7b0e37d74e3318364909ff25f008f1e1365e7406",
        "diffusion_pytorch_model.safetensors": "02a114df26d0477f92be873c77d033454c220128664af7a8a687bce0307312f1",
    },
}


def folder(name: str) -> Path:
    return Path(__file__).parent / name
