"""Evaluation metrics over embeddings: ID loss, the copy-paste index, paired bootstrap.

- ID loss (paper §4.1): 1 - cos(ArcFace(generated), ArcFace(reference)); lower is better.
- Copy-paste index: cos(generated, reference) - mean_j cos(generated, held-out photo j of the
  same person). A model that pastes the reference face scores high; one that renders the
  person (whom the held-out photos show in other pictures) scores near zero.
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
