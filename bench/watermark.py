"""Watermark filter on a held-out set built from the shipped photos (curation.samples.watermark_set:
stock and photographer marks in six fonts, 3-9 % sizes, opacity 0.2-0.6, tiled / corner / centre, white,
grey and black; clean counterparts with the photo alone, a shop sign, a T-shirt print).

Runs the curate config's face stage (for the face box) then its watermark stage, as `infu curate`
does, one row at a time on one thread, and prints precision and recall (overall, by placement, by
opacity), the false positives, and images/s per core of both stages.

    python bench/watermark.py [--threshold 0.5] [--show-misses] [--shift 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from curation.samples import watermark_set  # noqa: E402
from curation.engine import run_stage  # noqa: E402
from faces import row  # noqa: E402
from pipelines.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threshold", type=float, default=None, help="override the config's threshold")
    ap.add_argument("--show-misses", action="store_true", help="print every missed mark")
    ap.add_argument("--shift", type=int, default=0,
                    help="deal fonts, sizes, opacities, placements to the marks another way (a set not tuned on)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    over = {"threshold": args.threshold} if args.threshold is not None else {}
    faces, _, wm = load_config("curate", overrides={"stages": ["faces", "nsfw", {"name": "watermark", **over}]}).stages
    faces.ensure_setup()
    wm.ensure_setup()
    items = watermark_set(args.shift)
    t_face = t_wm = 0.0
    for it in items:
        rgb = np.asarray(it["image"])
        f = row(rgb)
        t = time.perf_counter()
        run_stage(faces, [f])
        t_face += time.perf_counter() - t
        r = row(rgb)  # score every image, whatever the face filter decided, with the face box it found
        r.update(bbox=f["bbox"])
        t = time.perf_counter()
        run_stage(wm, [r])
        t_wm += time.perf_counter() - t
        it.update(flagged=r["reason"] == "watermark", score=r["watermark"], why=r["watermark_text"])
    report(items, wm.opts.threshold, args.show_misses)
    n = len(items)
    print(f"\nper core (one thread): faces {n / t_face:.2f} images/s, watermark (ocr) {n / t_wm:.2f} images/s "
          f"(watermark/faces time {t_wm / t_face:.2f}x)")


def pr(rows: list[dict]) -> str:
    marked = [r for r in rows if r["marked"]]
    tp = sum(r["flagged"] for r in marked)
    fp = sum(r["flagged"] for r in rows if not r["marked"])
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / len(marked) if marked else float("nan")
    return f"{len(rows):>4} images  precision {prec:5.3f}  recall {rec:5.3f} ({tp}/{len(marked)})  false positives {fp}"


def report(items: list[dict], threshold: float, show_misses: bool) -> None:
    print(f"watermark stage, threshold {threshold}")
    print(f"{'all':<24}{pr(items)}")
    for kind in ("tiled", "corner", "centre"):
        print(f"{'marks: ' + kind:<24}{pr([r for r in items if r['kind'] in (kind, 'clean', 'sign', 'shirt')])}")
    for op in (0.2, 0.3, 0.4, 0.5, 0.6):
        print(f"{'opacity ' + str(op):<24}{pr([r for r in items if r['opacity'] == op])}")
    print(f"{'opacity >= 0.3':<24}{pr([r for r in items if (r['opacity'] or 0) >= 0.3])}")
    for kind in ("clean", "sign", "shirt"):
        flagged = [r for r in items if r["kind"] == kind and r["flagged"]]
        print(f"{'clean: ' + kind:<24}{sum(r['kind'] == kind for r in items)} images, flagged {len(flagged)}"
              + "".join(f"\n    {r['name']}: {r['score']:.2f} {r['why']}" for r in flagged))
    misses = [r for r in items if r["marked"] and not r["flagged"]]
    if show_misses:
        for r in misses:
            print(f"  missed {r['name']} (opacity {r['opacity']}): {r['score']} {r['why']}")


if __name__ == "__main__":
    main()
