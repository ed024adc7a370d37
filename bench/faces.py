"""Face stage throughput per core on 1024x1024 photos, next to a Haar-cascade face
count at full resolution (the method Data-Juicer's face filters use), and the
detection counts of both on the fixture set.

    python bench/faces.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from curation import samples  # noqa: E402
from curation.engine import ALIVE  # noqa: E402
from curation.registry import empty_row  # noqa: E402
from pipelines.jobs import load_config  # noqa: E402


def square(im: Image.Image, side: int = 1024) -> np.ndarray:
    s = max(im.size)
    canvas = Image.new("RGB", (s, s), (255, 255, 255))
    canvas.paste(im, ((s - im.width) // 2, (s - im.height) // 2))
    return np.asarray(canvas.resize((side, side), Image.Resampling.LANCZOS))


def fixtures() -> dict[str, tuple[np.ndarray, int]]:
    """name -> (1024x1024 RGB, faces a person counts in it)."""
    a, g = samples.astronaut(), samples.grace_hopper()
    return {"astronaut": (square(a), 1), "grace_hopper": (square(g), 1), "group_t1": (square(samples.group()), 6),
            "two_portraits": (square(samples.side_by_side(a, g)), 2), "cat": (square(samples.cat()), 0),
            "small_face_canvas": (square(samples.small_face_canvas(a)), 1)}


def closeups() -> dict[str, tuple[np.ndarray, int]]:
    """FFHQ/CelebA-HQ-like aligned close-ups: the face fills a third of the frame."""
    a, g = samples.astronaut(), samples.grace_hopper()
    return {"astronaut_closeup": (square(a.crop((120, 20, 330, 230))), 1),
            "grace_closeup": (square(g.crop((110, 90, 430, 410))), 1)}


def row(rgb: np.ndarray) -> dict:
    r = empty_row()
    r.update(id="x", status=ALIVE, width=rgb.shape[1], height=rgb.shape[0], _analysis=rgb.tobytes(),
             _analysis_h=rgb.shape[0], _analysis_w=rgb.shape[1])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)  # per core
    stage = next(s for s in load_config("curate").stages if s.name == "faces")
    stage.setup()
    haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    fx = fixtures()

    def ours(rgb):
        r = row(rgb)
        stage.process([r])
        return r["face_count"] or 0

    def haar_count(rgb):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return len(haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=3))

    def rate(fn, images):
        t = time.perf_counter()
        for _ in range(args.repeat):
            for rgb, _n in images.values():
                fn(rgb)
        return args.repeat * len(images) / (time.perf_counter() - t)

    fx.update(closeups())
    results = {}
    for name, fn in (("face stage (dlib HOG + 68 landmarks + descriptor)", ours),
                     ("Haar cascade count, full resolution", haar_count)):
        counts = {k: fn(v[0]) for k, v in fx.items()}  # warm-up and counts
        results[name] = (rate(fn, fx), rate(fn, closeups()), counts)
    base = results["Haar cascade count, full resolution"]
    print(f"1024x1024 images, one core (cv2 threads = 1), {args.repeat} passes\n")
    print(f"{'method':<52}{'all fixtures':>14}{'vs Haar':>9}{'close-ups':>11}{'vs Haar':>9}   (images/s)")
    for name, (r_all, r_close, _) in results.items():
        print(f"{name:<52}{r_all:>14.2f}{r_all / base[0]:>8.2f}x{r_close:>11.2f}{r_close / base[1]:>8.2f}x")
    print(f"\n{'fixture':<20}{'true':>5}" + "".join(f"{n.split(' ')[0]:>12}" for n in results))
    for k, (_, n) in fx.items():
        print(f"{k:<20}{n:>5}" + "".join(f"{c[k]:>12}" for _, _, c in results.values()))


if __name__ == "__main__":
    main()
