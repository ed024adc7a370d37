"""Train the watermark detector that ships in the package (infu://watermark-classifier).

    python scripts/train_watermark_classifier.py [--out infu_model/bundled/watermark-classifier] [--seed 0]

curation/watermark_net.py's WatermarkNet, from a random init, on curation/watermark_data.py's examples:
photos, fonts and logos from installed packages with marks laid over them, against the same crops
with things that belong to the photo (signs, shirt prints, captions, posters, jewellery, patterned
cloth). Each example teaches where the mark shows, cell by cell (the pixels it changed), and whether
the crop holds one. It then scores whole photos of the holdout split (photos, fonts, words and a logo it
never saw) and writes validation.json beside the weights.

Reproducible: the same seed, torch version and thread count (2, set here) give the same bytes;
infu_model/bundled/__init__.py records the sha256 each load checks.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from curation.watermark_net import WatermarkNet  # noqa: E402

CROP = 192          # training crops (pixels of the photo scaled to the net's side)
VISIBLE = 6 / 255   # a pixel the mark changed by this much, at the net's scale, shows it
MARKED = 0.03       # a cell is marked where this share of its pixels show the mark


def _scaled(net: WatermarkNet, ex: dict) -> tuple[np.ndarray, np.ndarray]:
    """The example as the net sees it ([3, h, w] float16) and its cells' targets ([h/cell, w/cell])."""
    import cv2

    x = net.prepare(np.asarray(ex["image"]))[0]
    h, w = x.shape[1:]
    shows = cv2.resize(ex["change"], (w, h), interpolation=cv2.INTER_AREA) >= VISIBLE
    cells = F.avg_pool2d(torch.from_numpy(shows.astype(np.float32))[None, None], net.cell)[0, 0]
    return x.half().numpy(), (cells >= MARKED).numpy().astype(np.uint8)


def _chunk(args):
    from curation.watermark_data import examples

    split, n, seed, crop = args
    net, rng = WatermarkNet(), np.random.default_rng(seed)
    xs, ts, kinds, labels = [], [], [], []
    for ex in examples(split, n, seed, side=(256, 1024)):
        x, t = _scaled(net, ex)
        if crop:  # a random crop of whole cells, padded where the photo is smaller
            c = crop // net.cell
            pad_h, pad_w = max(0, c - t.shape[0]), max(0, c - t.shape[1])
            x = np.pad(x, ((0, 0), (0, pad_h * net.cell), (0, pad_w * net.cell)))
            t = np.pad(t, ((0, pad_h), (0, pad_w)))
            i, j = rng.integers(0, t.shape[0] - c + 1), rng.integers(0, t.shape[1] - c + 1)
            x, t = x[:, i * net.cell:(i + c) * net.cell, j * net.cell:(j + c) * net.cell], t[i:i + c, j:j + c]
        xs.append(x)
        ts.append(t)
        kinds.append(ex["kind"])
        labels.append(ex["label"])
    return xs, ts, kinds, labels


def dataset(split: str, n: int, seed: int, crop: int | None, chunk: int = 200):
    """n examples of split made in 2 processes, chunk by chunk with their own seeds (the same data
    whatever order the chunks finish in)."""
    jobs = [(split, min(chunk, n - i), seed * 100_000 + i // chunk, crop) for i in range(0, n, chunk)]
    import multiprocessing

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:  # (fork after torch ran: hangs)
        parts = list(pool.map(_chunk, jobs))
    return [sum((p[k] for p in parts), []) for k in range(4)]


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    xs, ts, _, _ = dataset("train", args.examples, args.seed, CROP)
    x, t = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)).float()
    marked = float(t.mean())
    print(f"made {len(x)} training crops in {time.time() - t0:.0f} s; {marked:.3f} of cells marked", flush=True)
    net = WatermarkNet().train()
    # start the cells at their prior: from 0, the many clean cells stall the first ~1000 steps
    torch.nn.init.constant_(net.head.bias, math.log(marked / (1 - marked)))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(args.seed)
    pos_weight = torch.tensor(args.pos_weight)
    t0 = time.time()
    for step in range(args.steps):
        pairs = torch.randint(len(x) // 2, (args.batch // 2,), generator=g) * 2   # both halves of a pair
        idx = torch.stack([pairs, pairs + 1], 1).flatten()
        xb, tb = x[idx].float(), t[idx]
        flip = torch.rand(len(idx), generator=g) < 0.5
        xb[flip], tb[flip] = xb[flip].flip(-1), tb[flip].flip(-1)
        logits = net(xb)[:, 0]
        cell_loss = F.binary_cross_entropy_with_logits(logits, tb, pos_weight=pos_weight)
        photo_loss = F.binary_cross_entropy_with_logits(net.photo_logit(logits[:, None]),
                                                        (tb.flatten(1).amax(1) > 0).float())
        loss = cell_loss + args.photo_weight * photo_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  cells {cell_loss.item():.4f}  photos {photo_loss.item():.4f}  "
                  f"{time.time() - t0:.0f} s", flush=True)
    net.eval()
    calibrate(net, args)
    out = Path(args.out)
    net.save_pretrained(out)
    validate(net, out, args)


def photo_logits(net: WatermarkNet, xs: list[np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        return torch.tensor([float(net.photo_logit(net(torch.from_numpy(x).float()[None]))[0]) for x in xs])


def calibrate(net: WatermarkNet, args) -> None:
    """Set ``offset`` so that the given share of whole clean photos (fresh ones, of the training
    split: the holdout stays unseen) score under 0.5: crops teach the cells, whole photos have more."""
    xs, _, _, labels = dataset("train", args.calibration, args.seed + 2, None)
    z = photo_logits(net, xs)[torch.tensor(labels) == 0]
    net.config.offset = round(float(torch.quantile(z, args.clean_kept)), 4)
    print(f"offset {net.config.offset} (from {len(z)} clean training photos)", flush=True)


def validate(net: WatermarkNet, out: Path, args) -> None:
    """Whole photos of the holdout split, as the stage scores them."""
    xs, _, kinds, labels = dataset("holdout", args.holdout, args.seed + 1, None)
    p = (photo_logits(net, xs) - net.config.offset).sigmoid()
    y, flagged = torch.tensor(labels), p >= 0.5
    by_kind = {k: {"n": sum(kk == k for kk in kinds), "flagged": int(sum(f for f, kk in zip(flagged, kinds) if kk == k))}
               for k in sorted(set(kinds))}
    report = {
        "seed": args.seed, "steps": args.steps, "offset": net.config.offset, "examples": args.examples, "holdout": args.holdout,
        "recall": round(float(flagged[y == 1].float().mean()), 4),
        "false_positive_rate": round(float(flagged[y == 0].float().mean()), 4),
        "by_kind": by_kind, "torch": torch.__version__,
        "sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(out.iterdir())
                   if f.name != "validation.json"},
    }
    (out / "validation.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="infu_model/bundled/watermark-classifier", help="folder to write the model to")
    ap.add_argument("--seed", type=int, default=0, help="seeds the examples, the init and the batches")
    ap.add_argument("--examples", type=int, default=8000, help="training examples made (half marked)")
    ap.add_argument("--holdout", type=int, default=400, help="holdout photos scored after training")
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    ap.add_argument("--batch", type=int, default=32, help="crops per step (pairs: a marked crop and its clean twin)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (one-cycle; 3e-3 learns far less)")
    ap.add_argument("--pos-weight", type=float, default=1.5, help="weight of marked cells (they are few)")
    ap.add_argument("--photo-weight", type=float, default=0.5, help="weight of the whole-crop loss")
    ap.add_argument("--calibration", type=int, default=400, help="whole training photos that set the offset")
    ap.add_argument("--clean-kept", type=float, default=1.0,
                    help="share of them (clean) to score under 0.5 (1: every one; 0.99 let 13 %% of the holdout's through)")
    ap.add_argument("--validate", action="store_true", help="only score the holdout with the model in --out")
    args = ap.parse_args()
    if args.validate:
        torch.set_num_threads(2)
        net = WatermarkNet.from_pretrained(args.out)
        if args.calibration:
            calibrate(net, args)
            net.save_pretrained(args.out)
        validate(net, Path(args.out), args)
    else:
        train(args)


if __name__ == "__main__":
    main()
