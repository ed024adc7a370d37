"""Aspect-ratio bucketing (NovelAI style, as the paper does).

Buckets are (width, height) pairs with sides in multiples of ``step`` and area at
most ``max_area``; an image goes to the bucket whose aspect ratio is closest in
log space, so 2:3 and 3:2 are equally far from 1:1.
"""
from __future__ import annotations

import math


def make_buckets(max_area: int = 1024 * 1024, step: int = 64, min_side: int = 512,
                 max_side: int = 2048) -> list[tuple[int, int]]:
    """NovelAI's generation: for each width, the tallest height that fits the area; then mirrored."""
    out = set()
    w = min_side
    while w <= max_side:
        h = min(max_side, (max_area // w) // step * step)
        if h >= min_side:
            out.add((w, h))
            out.add((h, w))
        w += step
    side = int(math.isqrt(max_area)) // step * step
    out.add((side, side))
    return sorted(out, key=lambda b: b[0] / b[1])


def assign_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    target = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - target), -b[0] * b[1]))


def bucket_name(bucket: tuple[int, int]) -> str:
    return f"{bucket[0]}x{bucket[1]}"
