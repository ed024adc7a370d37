"""InfU's control image: five facial keypoints drawn on black.

As the published pipeline draws them (InstantID's ``draw_kps``): four "limbs"
from each eye and mouth corner to the nose tip (keypoint 2) as filled ellipses
of half-width 4, the limb layer scaled by 0.6, then a filled circle of radius 10
per keypoint; colours by keypoint index. A control photo is first fitted inside
the target size (scaled by the smaller ratio) and centred on a white canvas.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
LIMBS = [(0, 2), (1, 2), (3, 2), (4, 2)]
STICK_WIDTH = 4
CIRCLE_RADIUS = 10


def draw_kps(size: tuple[int, int], kps: np.ndarray) -> Image.Image:
    """An RGB image of ``size`` (width, height) with the keypoints drawn on black."""
    w, h = size
    kps = np.asarray(kps, dtype=np.float64)
    canvas = np.zeros((h, w, 3), dtype=np.float64)
    for a, b in LIMBS:
        x, y = kps[[a, b], 0], kps[[a, b], 1]
        length = math.hypot(x[0] - x[1], y[0] - y[1])
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        poly = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        canvas = cv2.fillConvexPoly(canvas, poly, COLORS[a])
    out = (canvas * 0.6).astype(np.uint8)
    for i, (x, y) in enumerate(kps):
        out = cv2.circle(out, (int(x), int(y)), CIRCLE_RADIUS, COLORS[i], -1)
    return Image.fromarray(out)


def fit_on_white(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``img`` to fit inside ``size`` (width, height) and centre it on white."""
    w, h = size
    s = min(w / img.width, h / img.height)
    resized = img.convert("RGB").resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                                        Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    canvas.paste(resized, ((w - resized.width) // 2, (h - resized.height) // 2))
    return canvas


def black_control(size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, (0, 0, 0))
