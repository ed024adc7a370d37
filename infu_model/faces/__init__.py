"""Face analysis: one interface, shared by curation, SPMS filtering and inference.

A backend finds faces (box, the five InfU keypoints, a detection score) and
turns one face into an identity embedding. Keypoints follow insightface's order,
in image coordinates: left eye, right eye, nose tip, left mouth corner, right
mouth corner ("left" = smaller x).

Backends:
- ``dlib``: offline, weights inside the ``dlib-bin`` / ``face-recognition-models``
  wheels. HOG (or CNN) detector, 68 landmarks reduced to five, 128-d descriptor.
- ``insightface``: what InfU uses. antelopev2 SCRFD at 640, falling back to 320
  and 160; the 512-d IR-SE50 ArcFace embedding on the 112x112 ``norm_crop``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    bbox: np.ndarray                     # (4,) x1, y1, x2, y2
    kps: np.ndarray                      # (5, 2)
    det_score: float
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))

    @property
    def short_side(self) -> float:
        return float(min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]))

    def scaled(self, s: float) -> "Face":
        return Face(self.bbox * s, self.kps * s, self.det_score, self.embedding)


class FaceModelMissing(FileNotFoundError):
    """A configured model file is not where the config says."""


class FaceAnalyzer:
    """Backend interface. Images are RGB uint8 arrays."""

    name: str = ""            # written to records as ``id_backend``
    embedding_dim: int = 0
    metric: str = "cosine"    # how embeddings compare: "cosine" (higher = closer) or "euclidean"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces, largest first, without embeddings."""
        raise NotImplementedError

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        raise NotImplementedError



def metric_of(backend: str) -> str:
    """How the embeddings of the backend named ``backend`` (a record's ``id_backend``) compare: dlib's
    descriptors by euclidean distance, ArcFace-style ones (every other backend) by cosine."""
    from infu_model.faces.dlib_backend import DlibFaceAnalyzer

    return DlibFaceAnalyzer.metric if backend == DlibFaceAnalyzer.name else "cosine"


def main_face(faces: list[Face], min_score: float) -> tuple[Face | None, list[Face]]:
    """The photo's main face and the other clear faces beside it.

    ``faces`` come largest first. The main face is the largest clear one (detection score at
    least ``min_score``), or the largest weak one when none is clear; the others are the other
    clear faces. ``1 + len(others)`` is the face count curation and the ID filter record."""
    if not faces:
        return None, []
    clear = [f for f in faces if f.det_score >= min_score]
    main = clear[0] if clear else faces[0]
    return main, [f for f in clear if f is not main]


def cosine(a, b) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays (or one vector against each row)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def stored_embedding(embedding, backend: str | None, analyzer: FaceAnalyzer, dim: int | None = None):
    """A record's identity embedding when ``analyzer`` made it (same backend, and ``dim`` when
    given), as float32; None when it must be computed again from the image."""
    if embedding is None or backend != analyzer.name or (dim is not None and len(embedding) != dim):
        return None
    return np.asarray(embedding, np.float32)


def largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.area, reverse=True)


def head_pose(kps: np.ndarray) -> tuple[float, float]:
    """Coarse (yaw, pitch) in degrees from the five keypoints.

    The face is first de-rolled about the eye midpoint. Yaw: the nose's sideways
    offset from the eye/mouth midline, over half the eye distance, taken as the
    sine of the angle (a frontal face is 0, the nose reaching an eye ~90 deg).
    Pitch: where the nose sits between the eye line and the mouth line, against
    ArcFace's frontal template (0.494 of the way down), scaled the same way.
    Good enough to drop profile and extreme up/down views; not a 3D fit.
    """
    k = np.asarray(kps, dtype=np.float64)
    le, re_, nose, lm, rm = k
    roll = math.atan2(re_[1] - le[1], re_[0] - le[0])
    c, s = math.cos(-roll), math.sin(-roll)
    rot = np.array([[c, -s], [s, c]])
    eye_mid = (le + re_) / 2
    p = (k - eye_mid) @ rot.T
    le, re_, nose, lm, rm = p
    half_eye = max(1e-6, (re_[0] - le[0]) / 2)
    mouth_mid = (lm + rm) / 2
    mid_x = (0.0 + mouth_mid[0]) / 2
    yaw = math.degrees(math.asin(float(np.clip((nose[0] - mid_x) / half_eye, -1, 1))))
    span = max(1e-6, mouth_mid[1])
    pitch = math.degrees(math.asin(float(np.clip((nose[1] / span - 0.494) / 0.5, -1, 1))))
    return yaw, pitch


def analyzer_device(cfg: dict) -> str:
    """Where the backend named by ``cfg`` runs: dlib always on the CPU, insightface where configured."""
    if cfg.get("backend", "dlib") == "insightface":
        return str((cfg.get("insightface") or {}).get("device", "cpu"))
    return "cpu"


def analyzer_models(cfg: dict) -> list[tuple[str, str, str]]:
    """(model, device, runtime) of the backend named by ``cfg`` (see infu_model.runtime.placement)."""
    if cfg.get("backend", "dlib") == "insightface":
        device = analyzer_device(cfg)
        return [("SCRFD detector", device, "onnxruntime"), ("ArcFace", device, "torch")]
    return [("dlib faces", "cpu", "dlib")]


def analyzer_needs(cfg: dict) -> list:
    """The models (infu_model.hub.Need) the backend named by ``cfg`` loads: dlib's ship in its wheel."""
    if cfg.get("backend", "dlib") != "insightface":
        return []
    from infu_model.faces.insightface_backend import model_needs

    return model_needs(**(cfg.get("insightface") or {}))


def make_face_analyzer(cfg: dict) -> FaceAnalyzer:
    """Build the backend named by ``cfg["backend"]`` with its own sub-config."""
    backend = cfg.get("backend", "dlib")
    if backend == "dlib":
        from infu_model.faces.dlib_backend import DlibFaceAnalyzer

        return DlibFaceAnalyzer(**(cfg.get("dlib") or {}))
    if backend == "insightface":
        from infu_model.faces.insightface_backend import InsightFaceAnalyzer

        return InsightFaceAnalyzer(**(cfg.get("insightface") or {}))
    raise ValueError(f"unknown face backend {backend!r} (dlib or insightface)")
