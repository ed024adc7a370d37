"""The offline face backend: dlib's models as shipped in ``face-recognition-models``.

Detection runs on the image scaled to ``det_side`` on its long side (HOG cost
grows with pixels; its window finds faces of about 80 px and up). A second pass
with ``fallback_upsample`` (dlib's pyramid up-sampling, x2 per step) runs only
when the first could have missed a face that matters: when it found nothing, or
when faces down to ``recall_ratio`` of the largest face's side would be under
the window. Big-face portraits take the cheap path. Landmarks and descriptors
are always computed on the full image.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from infu_model.faces import Face, FaceAnalyzer, FaceModelMissing, largest_first

# 68-point indices of the five InfU keypoints (image-left eye = subject's right eye)
_LEFT_EYE, _RIGHT_EYE, _NOSE, _MOUTH_L, _MOUTH_R = range(36, 42), range(42, 48), 30, 48, 54


def model_path(name: str) -> Path:
    """A ``.dat`` file inside face-recognition-models, found without importing the
    package (its ``__init__`` needs ``pkg_resources``, gone from current setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelMissing("the face-recognition-models package is not installed")
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not p.is_file():
        raise FaceModelMissing(f"dlib model file not found: {p}")
    return p


def five_points(shape) -> np.ndarray:
    pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float32)
    return np.stack([pts[list(_LEFT_EYE)].mean(0), pts[list(_RIGHT_EYE)].mean(0),
                     pts[_NOSE], pts[_MOUTH_L], pts[_MOUTH_R]])


class DlibFaceAnalyzer(FaceAnalyzer):
    name = "dlib_resnet_v1"
    embedding_dim = 128
    metric = "euclidean"  # dlib's descriptor: same person < 0.6 apart

    WINDOW = 80  # smallest face side the HOG detector finds without up-sampling

    def __init__(self, detector: str = "hog", det_side: int = 640, fallback_upsample: int = 1,
                 adjust_threshold: float = 0.0, recall_ratio: float = 0.32):
        import dlib

        self._dlib = dlib
        self.kind = detector
        if detector == "hog":
            self.detector = dlib.get_frontal_face_detector()
        elif detector == "cnn":
            self.detector = dlib.cnn_face_detection_model_v1(str(model_path("mmod_human_face_detector.dat")))
        else:
            raise ValueError(f"dlib detector must be hog or cnn, not {detector!r}")
        self.predictor = dlib.shape_predictor(str(model_path("shape_predictor_68_face_landmarks.dat")))
        self.encoder = dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))
        self.det_side, self.fallback_upsample = int(det_side), int(fallback_upsample)
        self.adjust_threshold = float(adjust_threshold)
        self.recall_ratio = float(recall_ratio)
        self._shapes: dict[int, object] = {}

    def _run(self, img: np.ndarray, upsample: int) -> list[tuple[tuple[float, float, float, float], float]]:
        if self.kind == "hog":
            rects, scores, _ = self.detector.run(img, upsample, self.adjust_threshold)
            return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
        dets = self.detector(img, upsample)
        return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence)) for d in dets]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self._shapes.clear()  # landmarks kept only for the faces of the latest image
        rgb = np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        s = min(1.0, self.det_side / max(h, w))
        small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else rgb
        found = self._run(small, 0)
        biggest = max((min(b[2] - b[0], b[3] - b[1]) for b, _ in found), default=0)
        if self.fallback_upsample > 0 and self.recall_ratio * biggest < self.WINDOW:
            found = self._run(small, self.fallback_upsample)
        found = [(np.array(b, np.float32) / s, sc) for b, sc in found]
        faces = []
        for box, score in found:
            box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
            rect = self._dlib.rectangle(*(int(round(v)) for v in box))
            shape = self.predictor(rgb, rect)
            face = Face(box, five_points(shape), score)
            self._shapes[id(face)] = shape
            faces.append(face)
        return largest_first(faces)

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        shape = self._shapes.pop(id(face), None)
        if shape is None:
            b = face.bbox
            shape = self.predictor(rgb, self._dlib.rectangle(*(int(round(v)) for v in b)))
        return np.asarray(self.encoder.compute_face_descriptor(np.ascontiguousarray(rgb), shape, 0), np.float32)
