"""Several people in one image: a region per identity, as a mask over the transformer's image tokens.

FLUX packs the latent (height/8 x width/8) into 2x2 patches: one token per 16x16 output pixels
(``patch``: twice the VAE's scale factor), row by row. Each identity's InfuseNet residuals are added
only where its region covers a token, weighted by how much of the token's pixels the region covers; where regions overlap their
weights are scaled to sum to one, and a token outside every region gets no identity's residuals.
A region is a box ``(x1, y1, x2, y2)`` in output pixels or a mask image (any size: stretched over
the output; white is inside). Without regions, the image is split into equal vertical strips, left
to right in the order the identities are given.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

PATCH = 16   # output pixels per image token (FLUX's VAE 8x, then 2x2 packing)


def default_regions(count: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """``count`` equal vertical strips, left to right."""
    edges = np.linspace(0, width, count + 1).round().astype(int)
    return [(int(edges[k]), 0, int(edges[k + 1]), height) for k in range(count)]


def region_mask(region, width: int, height: int, patch: int = PATCH) -> np.ndarray:
    """The share of each token's pixels inside ``region``: (height/patch, width/patch) in [0, 1]."""
    if isinstance(region, np.ndarray) and region.ndim == 2:  # a mask as numbers in [0, 1]
        region = Image.fromarray((np.clip(region, 0, 1) * 255).astype(np.uint8))
    if isinstance(region, Image.Image):
        pixels = np.asarray(region.convert("L").resize((width, height), Image.NEAREST), np.float64) / 255.0
    else:
        x1, y1, x2, y2 = (float(v) for v in region)
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ValueError(f"region {tuple(region)} is not a box (x1, y1, x2, y2) inside the {width}x{height} image")
        pixels = np.zeros((height, width))
        pixels[int(round(y1)):int(round(y2)), int(round(x1)):int(round(x2))] = 1.0
    return pixels.reshape(height // patch, patch, width // patch, patch).mean(axis=(1, 3))


def token_masks(regions: list, width: int, height: int, patch: int = PATCH) -> torch.Tensor:
    """(identities, tokens, 1) weights, in the packed tokens' order; overlaps scaled to sum to one."""
    masks = np.stack([region_mask(r, width, height, patch).reshape(-1) for r in regions])
    total = masks.sum(axis=0, keepdims=True)
    masks = masks / np.maximum(total, 1.0)
    empty = np.flatnonzero(~(masks > 0).any(axis=1))
    if len(empty):
        raise ValueError(f"the region of identity {empty[0]} covers no part of the image")
    return torch.from_numpy(masks.astype(np.float32))[..., None]


def combine(per_identity: list[tuple[list, list]], masks: torch.Tensor) -> tuple[list, list]:
    """Each identity's (double, single) residual lists, each within its region, summed."""
    def merged(part: int) -> list:
        blocks = zip(*(res[part] for res in per_identity))
        return [sum(m.to(r.dtype) * r for m, r in zip(masks.to(rs[0].device), rs)) for rs in blocks]

    return merged(0), merged(1)
