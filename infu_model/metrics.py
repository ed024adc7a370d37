"""Evaluation metrics over embeddings: ID loss, the copy-paste index, paired bootstrap.

- ID loss (paper §4.1): 1 - cos(ArcFace(generated), ArcFace(reference)); lower is better.
- Copy-paste index: cos(generated, reference) - mean_j cos(generated, held-out photo j of the
  same person). A model that pastes the reference face scores high; one that renders the
  person (whom the held-out photos show in other pictures) scores near zero.
- MultiID-Bench (WithAnyone, 2025), with the identity's held-out photos as its ground truth (GT):
  Sim(GT), the mean cosine of the generated face to the GT photos; Sim(Ref), its cosine to the
  reference (1 - ID loss); and the angular copy-paste score (theta(g, t) - theta(g, r)) / theta(t, r),
  theta the angle between embeddings, averaged over GT photos t: 1 where the face is the
  reference's, -1 where it is the GT photo's, 0 halfway. Faces are matched to identities by the
  Hungarian method on cosine similarity (``match_faces``).
- Paired bootstrap: the mean of per-item differences B - A with a percentile confidence
  interval, resampling items (identity x prompt x seed) with replacement.
"""
from __future__ import annotations

import numpy as np

from infu_model.faces import cosine


def id_loss(generated, reference) -> np.ndarray:
    return 1.0 - cosine(generated, reference)


def copy_paste_index(generated, reference, held_out) -> float:
    """For one generated embedding: cos to the reference minus the mean cos to the held-out photos."""
    held = np.atleast_2d(np.asarray(held_out, np.float64))
    if not len(held):
        raise ValueError("the copy-paste index needs at least one held-out photo")
    return float(cosine(generated, reference)[0] - cosine(held, generated).mean())


def angle(a, b) -> np.ndarray:
    """Row-wise angle (radians) between embeddings: the metric on the sphere that their cosine is not."""
    return np.arccos(np.clip(cosine(a, b), -1.0, 1.0))


def sim_gt(generated, ground_truth) -> float:
    """MultiID-Bench's Sim(GT): the mean cosine of a generated face to the identity's GT photos."""
    gt = np.atleast_2d(np.asarray(ground_truth, np.float64))
    if not len(gt):
        raise ValueError("Sim(GT) needs at least one ground-truth photo")
    return float(cosine(gt, generated).mean())


def copy_paste_angle(generated, reference, ground_truth, eps: float = 1e-3) -> float:
    """MultiID-Bench's copy-paste score of one generated face, in [-1, 1] (the angle is a metric, so
    |theta(g, t) - theta(g, r)| <= theta(t, r)); a GT photo whose angle to the reference is under ``eps``
    (the reference itself) tells nothing and is left out."""
    gt = np.atleast_2d(np.asarray(ground_truth, np.float64))
    span = angle(gt, reference)
    gt, span = gt[span > eps], span[span > eps]
    if not len(gt):
        raise ValueError("the copy-paste score needs a ground-truth photo other than the reference")
    return float(np.mean((angle(gt, generated) - angle(np.atleast_2d(reference), generated)) / span))


def match_faces(faces, identities) -> list[tuple[int, int]]:
    """Generated faces matched to identities (their reference embeddings), one face to one identity, by
    the Hungarian method on cosine similarity: (face index, identity index) pairs, as many as the fewer of
    the two. A face in the crowd goes unmatched; so does an identity the image lacks."""
    from scipy.optimize import linear_sum_assignment

    f = np.atleast_2d(np.asarray(faces, np.float64))
    ids = np.atleast_2d(np.asarray(identities, np.float64))
    if not f.size or not ids.size:
        return []
    sim = np.stack([cosine(ids, face) for face in f])  # faces x identities
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols)]


def paired_bootstrap(a, b, samples: int = 10000, ci: float = 0.95, seed: int = 0) -> dict:
    """Mean of b - a over paired items, with a percentile CI from ``samples`` resamples."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    if len(d) == 0:
        return {"n": 0, "diff": None, "ci_low": None, "ci_high": None}
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for i in range(0, samples, 1000):  # chunks keep memory at 1000 x n
        k = min(1000, samples - i)
        means[i:i + k] = d[rng.integers(0, len(d), (k, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return {"n": int(len(d)), "diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi)}
