"""Watermarks found by reading them: PaddleOCR's PP-OCRv4 detector and recogniser
(the ONNX files inside the ``rapidocr-onnxruntime`` wheel) find text regions, and
four rules decide whether that text is a watermark or part of the photo.

Every rule scores each region in [0, 1] (the recogniser's confidence times the
rule's own strength); a rule's score is its best region's, times its weight in
``rules``; the image's watermark score combines the rules as independent
evidence, ``1 - prod(1 - s)``, so two weak signals together can reach the
threshold that neither reaches alone:

- ``vocabulary``: the text names a stock agency, a URL or a copyright
  (``©``, ``www.``, ``.com``, "Shutterstock", "preview", ...), matched loosely
  because overlaid text is often misread ("RREVIEW").
- ``over_face`` / ``over_centre``: the region crosses the main face's box, or
  the image centre. Nothing printed in a scene covers a face; a T-shirt print
  crosses the centre, which is why that rule is weak alone.
- ``repeated``: the same text read two or more times (tiled marks).
- ``translucent``: the text's pixels differ from the local background by a
  small, uniform fraction of the way to white (or black): an alpha-blended
  overlay, unlike paint on a sign.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import cv2
import numpy as np

from curation.engine import between


@dataclass(frozen=True)
class RuleWeights:
    vocabulary: float = between(0, 1)
    over_face: float = between(0, 1)
    over_centre: float = between(0, 1)
    repeated: float = between(0, 1)
    translucent: float = between(0, 1)


@dataclass(frozen=True)
class OcrOptions:
    det_side: int = between(32, 4096)
    min_confidence: float = between(0, 1)
    threads: int = between(1)
    equalize: bool
    fuzzy: float = between(0, 1)
    rules: RuleWeights
    vocabulary: tuple[str, ...]


@dataclass(frozen=True)
class TextRegion:
    box: np.ndarray      # 4x2 corners in the analysed image's pixels
    text: str
    confidence: float    # the recogniser's


@dataclass(frozen=True)
class Verdict:
    score: float
    rule: str | None     # the strongest rule, when any fired
    text: str | None     # what it read there

    def describe(self) -> str | None:
        return f"{self.rule}: {self.text}" if self.rule else None


class OcrReader:
    """Text regions of an RGB image. The detector sees the image with its short side scaled up to
    ``det_side`` (configs/curate.yaml: 896; PP-OCR's own 736 misses small marks), its long side at most
    ``max_side`` (a 1:50 strip is not blown up to a 36-megapixel canvas)."""

    def __init__(self, det_side: int, device: str, threads: int, min_confidence: float, equalize: bool,
                 max_side: int = 2000, max_regions: int = 200):
        from rapidocr_onnxruntime import RapidOCR

        from infu_model.runtime import ort_cuda, ort_session

        cuda = ort_cuda(device)
        self.det_side, self.max_side = det_side, max_side
        # local contrast equalised on lightness: a faint overlay gains contrast, a photo's own text barely changes
        self.clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)) if equalize else None
        # no angle classifier: watermarks are not upside down, and rotated boxes are rectified anyway
        self.engine = RapidOCR(det_limit_side_len=max_side, det_limit_type="max", max_side_len=max_side,
                               det_max_candidates=max_regions, use_cls=False, det_use_cuda=cuda, rec_use_cuda=cuda,
                               intra_op_num_threads=threads, inter_op_num_threads=1, text_score=min_confidence)
        if not cuda:  # rapidocr turns the CPU memory arena off: every run then maps and unmaps the detector's
            # large activations, a fifth of the OCR time; the same models in sessions with it on (ORT's
            # default) give the same numbers
            for owner in (self.engine.text_det.infer, self.engine.text_rec.session):
                model = owner.session._model_path or owner.session._model_bytes
                owner.session = ort_session(model, "cpu", threads)

    def __call__(self, rgb: np.ndarray) -> list[TextRegion]:
        h, w = rgb.shape[:2]
        scale = min(self.det_side / min(h, w), self.max_side / max(h, w))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if self.clahe is not None:
            lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
            lab[:, :, 0] = self.clahe.apply(lab[:, :, 0])
            bgr = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
        if scale > 1:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        found, _ = self.engine(bgr)
        s = max(scale, 1.0)
        return [TextRegion(np.asarray(box, np.float32) / s, str(text), float(conf)) for box, text, conf in found or []]


# a photographer's credit: "© Jane Doe 2023", also with the © misread or lost ("C Jane Doe 2023",
# "Jane Doe 2023"); title-case names only, so signs and prints in capitals ("CLASS OF 2023") stay out
CREDIT = re.compile(r"^\W*(?:[cC©]\s|\([cC]\)\s?)?(?:[A-Z][a-z]+\.?\s){2,3}(?:19[5-9]\d|20[0-3]\d)\W*$")
# a web address, also in pieces and misread: "w.annakim", "kimphoto.con"
URL = re.compile(r"(?:^|[^a-z])w{1,3}\.[a-z]|[a-z0-9]{2,}\.(?:com|con|net|org|co|de|uk|fr|jp|cn|ru)(?:$|[^a-z])")


def _normal(text: str) -> str:
    return re.sub(r"[^0-9a-z©@.]", "", text.lower())


def vocabulary_hit(text: str, terms, fuzzy: float = 0.8) -> str | None:
    """The first term ``text`` contains, or (six letters or more) is a piece of: exactly for terms
    under seven letters ("istock" would match "Stockh(olm)" one letter off), within ``fuzzy``
    similarity for longer ones (overlaid text is often misread, and a tiled mark is often read in
    pieces: "RREVIEW", "tersto", "eamstime.cor")."""
    t = _normal(text)
    if URL.search(t):
        return "web address"
    if CREDIT.match(text.strip()):
        return "name and year"
    for term in terms:
        n = _normal(term)
        if not n:
            continue
        if n in t or (len(t) >= 6 and t in n) or _digit_term_near(n, t):
            return term
        if len(n) >= 7 and len(t) >= 5:
            size = min(len(n), len(t))  # compare the shorter whole with windows of the longer
            short, long_ = (n, t) if len(n) <= len(t) else (t, n)
            if any(difflib.SequenceMatcher(None, short, long_[i:i + size]).ratio() >= fuzzy
                   for i in range(len(long_) - size + 1)):
                return term
    return None


def _digit_term_near(n: str, t: str) -> bool:
    """A term with a digit ("123rf", "pond5") is distinctive enough to match misread by one letter
    ("123ri") or missing an end ("23rf"), as long as what is read still holds a digit."""
    if len(n) < 5 or not any(c.isdigit() for c in n):
        return False
    pieces = [p for p in (n[1:], n[:-1]) if any(c.isdigit() for c in p)]
    if any(p in t for p in pieces):
        return True
    return any(sum(a != b for a, b in zip(n, t[i:i + len(n)])) <= 1 for i in range(len(t) - len(n) + 1))


def _crosses(box: np.ndarray, rect) -> bool:
    x1, y1, x2, y2 = rect
    bx1, by1 = box.min(0)
    bx2, by2 = box.max(0)
    return bx1 < x2 and bx2 > x1 and by1 < y2 and by2 > y1


def translucency(gray: np.ndarray, box: np.ndarray) -> float:
    """1 for strokes that sit a small, uniform fraction of the way from the local background to
    white or black (an alpha-blended overlay), 0 for strong or uneven contrast (paint, print)."""
    x1, y1 = np.floor(box.min(0)).astype(int)
    x2, y2 = np.ceil(box.max(0)).astype(int)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, gray.shape[1]), min(y2, gray.shape[0])
    if x2 - x1 < 8 or y2 - y1 < 8:
        return 0.0
    crop = gray[y1:y2, x1:x2]
    k = min(255, max(3, (y2 - y1) // 2 * 2 + 1))  # a median wider than a stroke: the background
    background = cv2.medianBlur(crop, k).astype(np.float32)
    diff = crop.astype(np.float32) - background
    strength = np.abs(diff)
    strokes = strength >= max(6.0, 0.5 * float(np.percentile(strength, 95)))
    if strokes.sum() < 20:
        return 0.0
    light = np.median(diff[strokes]) > 0
    room = (255.0 - background) if light else background
    alpha = strength[strokes] / np.maximum(room[strokes], 16.0)
    contrast = float(np.median(strength[strokes])) / 255.0
    a25, a50, a75 = np.percentile(alpha, [25, 50, 75])
    uniform = float(np.clip(1.0 - (a75 - a25) / max(a50, 1e-3), 0.0, 1.0))
    faint = float(np.clip((0.4 - contrast) / 0.25, 0.0, 1.0))   # contrast <= 0.15: fully faint
    return uniform * faint


def judge(regions: list[TextRegion], rgb: np.ndarray, face_box, opts: OcrOptions) -> Verdict:
    """Score the regions read on ``rgb`` (``face_box``: x1, y1, x2, y2 in the same pixels, or None)
    by the rules and vocabulary of ``opts``."""
    w = vars(opts.rules)
    h, wd = rgb.shape[:2]
    centre = (0.45 * wd, 0.45 * h, 0.55 * wd, 0.55 * h)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if w["translucent"] > 0 else None
    texts = [_normal(r.text) for r in regions]
    best: dict[str, tuple[float, str]] = {}

    def note(rule: str, score: float, text: str) -> None:
        score *= w[rule]
        if score > best.get(rule, (0.0, ""))[0]:
            best[rule] = (score, text)

    for i, r in enumerate(regions):
        term = vocabulary_hit(r.text, opts.vocabulary, opts.fuzzy)
        if term:
            note("vocabulary", r.confidence, f"{r.text!r} ({term})")
        if face_box is not None and _crosses(r.box, face_box):
            note("over_face", r.confidence, repr(r.text))
        if _crosses(r.box, centre):
            note("over_centre", r.confidence, repr(r.text))
        copies = sum(len(t) >= 3 and difflib.SequenceMatcher(None, texts[i], t).ratio() >= 0.7
                     for j, t in enumerate(texts) if j != i)
        if copies and len(texts[i]) >= 3:
            note("repeated", r.confidence * min(1.0, (copies + 1) / 3), f"{r.text!r} x{copies + 1}")
        if gray is not None:
            note("translucent", r.confidence * translucency(gray, r.box), repr(r.text))
    if not best:
        return Verdict(0.0, None, None)
    score = 1.0 - float(np.prod([1.0 - s for s, _ in best.values()]))
    rule, (_, text) = max(best.items(), key=lambda kv: kv[1][0])
    return Verdict(round(score, 4), rule, text)
