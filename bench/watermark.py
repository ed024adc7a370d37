"""Watermark filter on a held-out set built from the shipped photos (curation.samples.watermark_set:
stock and photographer marks in six fonts, 3-9 % sizes, opacity 0.2-0.6, tiled / corner / centre, white,
grey and black; clean counterparts with the photo alone, a shop sign, a T-shirt print).

Runs the curate config's face stage (for the face box) then its watermark stage's two opinions, as
`infu curate` does, one row at a time on one thread: the OCR rules and the classifier (by default
the one we ship, infu://watermark-classifier), and `any` (either). Prints precision and recall for
each (overall, by placement, by opacity), the false positives, and images/s per core.

    python bench/watermark.py [--threshold 0.5] [--show-misses] [--shift 5]
    python bench/watermark.py --holdout 400      # the classifier's own holdout, for all three opinions
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from curation.samples import watermark_set  # noqa: E402
from curation.engine import run_stage  # noqa: E402
from faces import row  # noqa: E402
from pipelines.jobs import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threshold", type=float, default=None, help="override the config's threshold")
    ap.add_argument("--show-misses", action="store_true", help="print every missed mark")
    ap.add_argument("--shift", type=int, default=0,
                    help="deal fonts, sizes, opacities, placements to the marks another way (a set not tuned on)")
    ap.add_argument("--holdout", type=int, default=0, metavar="N",
                    help="instead: N photos of the classifier's holdout split (scripts/train_watermark_classifier.py)")
    ap.add_argument("--seed", type=int, default=1, help="with --holdout: its seed (the training script validates on 1)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    over = {"threshold": args.threshold} if args.threshold is not None else {}
    stages = {c: load_config("curate", overrides={"stages": ["faces", {"name": "watermark", "combine": c, **over}]}
                             ).stages for c in ("ocr", "classifier")}
    faces = stages["ocr"][0]
    faces.ensure_setup()
    for _, wm in stages.values():
        wm.ensure_setup()
    items = holdout_set(args.holdout, args.seed) if args.holdout else watermark_set(args.shift)
    t_face, t_op = 0.0, {c: 0.0 for c in stages}
    for it in items:
        rgb = np.asarray(it["image"])
        f = row(rgb)
        t = time.perf_counter()
        run_stage(faces, [f])
        t_face += time.perf_counter() - t
        for c, (_, wm) in stages.items():
            r = row(rgb)  # score every image, whatever the face filter decided, with the face box it found
            r.update(bbox=f["bbox"])
            t = time.perf_counter()
            run_stage(wm, [r])
            t_op[c] += time.perf_counter() - t
            it[c] = {"flagged": r["reason"] == "watermark", "score": r["watermark"],
                     "why": r["watermark_text"] if c == "ocr" else f"classifier {r['watermark_classifier']}"}
        it["any"] = max((it["ocr"], it["classifier"]), key=lambda o: o["score"])
    threshold = stages["ocr"][1].opts.threshold
    for c in ("ocr", "classifier", "any"):
        print(f"\n== combine: {c}")
        report([{**it, **it[c]} for it in items], threshold, args.show_misses)
    n = len(items)
    print(f"\nper core (one thread): faces {n / t_face:.2f} images/s, OCR {n / t_op['ocr']:.2f} images/s, "
          f"classifier {n / t_op['classifier']:.2f} images/s (classifier/OCR time {t_op['classifier'] / t_op['ocr']:.3f}x)")


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
    for kind in sorted({r["kind"] for r in items if r["marked"]}):
        print(f"{'marks: ' + kind:<24}{pr([r for r in items if r['kind'] == kind])}")
    ops = sorted({r["opacity"] for r in items if r.get("opacity") is not None})
    if len(ops) <= 6:
        for op in ops:
            print(f"{'opacity ' + str(op):<24}{pr([r for r in items if r['opacity'] == op])}")
    for kind in sorted({r["kind"] for r in items if not r["marked"]}):
        flagged = [r for r in items if r["kind"] == kind and r["flagged"]]
        print(f"{'clean: ' + kind:<24}{sum(r['kind'] == kind for r in items)} images, flagged {len(flagged)}"
              + "".join(f"\n    {r['name']}: {r['score']:.2f} {r['why']}" for r in flagged[:5]))
    if show_misses:
        for r in items:
            if r["marked"] and not r["flagged"]:
                print(f"  missed {r['name']} (opacity {r.get('opacity')}): {r['score']} {r['why']}")


def holdout_set(n: int, seed: int) -> list[dict]:
    """The classifier's own holdout (curation/watermark_data.py): photos, fonts, words and a logo it
    never saw, half marked, half with something that belongs to the photo."""
    from curation.watermark_data import examples

    return [{"name": f"holdout/{i}-{e['kind']}", "image": e["image"], "marked": bool(e["label"]),
             "opacity": None, "kind": e["kind"]} for i, e in enumerate(examples("holdout", n, seed))]


if __name__ == "__main__":
    main()
