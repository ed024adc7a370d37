"""Face stage: one clear, reasonably large face per image.

Rejects:
- ``no_face``: no detection at or above ``min_det_score``;
- ``multiple_faces``: another face whose box area is at least
  ``secondary_face_ratio`` (default 0.1, i.e. about a third of the side) of the
  largest face's, detected with a score of at least ``secondary_min_score``.
  Smaller faces are tolerated as background people — a crowd behind a portrait
  subject does not make it a group photo — and so are weak detections: the
  up-sampled detector pass that finds small faces also fires on textures (a
  badge, a patch) with low scores, and a second face must be clear evidence;
- ``small_face``: the largest face's box is shorter than ``min_face_px`` pixels
  (in the original image) or covers less than ``min_face_ratio`` of the image.

Every row that reaches the detector gets ``face_count``; rows with a face get
``bbox``/``kps`` (original image pixels, EXIF-oriented), ``det_score``,
``face_ratio``, ``yaw``/``pitch`` — also when rejected, for the audit — and kept
rows get ``id_embedding`` + ``id_backend`` of that face (the largest clear one).

With ``groups.keep``, a photo of 2 to ``groups.max_faces`` people is a multi-ID record instead of a
``multiple_faces`` rejection when every face that counts (the main one and each other clear face at
least ``secondary_face_ratio`` of its area) passes the size rules a single face passes: the
``faces_*`` columns hold each one's box, keypoints, score and embedding, largest first, and the
job writes the record to ``groups/`` beside ``kept/`` (pipelines/job.py). Off by default: the
single-face output is then what it always was.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from curation.engine import Stage, between, plain, reject
from curation.records import ANALYSIS, analysis_image
from infu_model.faces import (analyzer_device, analyzer_models, analyzer_needs, head_pose, main_face,
                              make_face_analyzer)
from infu_model.hub import ModelRef


@dataclass(frozen=True)
class DlibOptions:
    detector: Literal["hog", "cnn"]
    det_side: int = between(64)
    fallback_upsample: int = between(0, 2)
    adjust_threshold: float = between(-1, 3)


@dataclass(frozen=True)
class InsightFaceOptions:
    root: ModelRef        # holds models/<pack>/scrfd_10g_bnkps.onnx
    pack: str
    arcface: ModelRef     # facexlib's recognition_arcface_ir_se50.pth
    det_sizes: tuple[int, ...] = between(64)
    det_thresh: float = between(0, 1)
    device: str


@dataclass(frozen=True)
class GroupOptions:
    keep: bool                              # photos of several people become multi-ID records (groups/)
    max_faces: int = between(2, 64)         # at most this many faces that count


@dataclass(frozen=True)
class FaceOptions:
    backend: Literal["dlib", "insightface"]
    dlib: DlibOptions
    insightface: InsightFaceOptions
    min_det_score: float
    secondary_face_ratio: float = between(0, 1)
    secondary_min_score: float = between(-1, 3)
    min_face_px: float = between(0)
    min_face_ratio: float = between(0, 1)
    embed: bool
    groups: GroupOptions


class FaceStage(Stage):
    name = "faces"
    reasons = ("no_face", "multiple_faces", "small_face")
    reads = ("width", "height", *ANALYSIS)
    writes = (
        pa.field("bbox", pa.list_(pa.float32(), 4)),          # x1, y1, x2, y2 in image pixels
        pa.field("kps", pa.list_(pa.list_(pa.float32(), 2), 5)),  # eyes, nose, mouth corners
        pa.field("det_score", pa.float32()),
        pa.field("face_ratio", pa.float32()),                 # face box area / image area
        pa.field("face_count", pa.int32()),
        pa.field("yaw", pa.float32()),
        pa.field("pitch", pa.float32()),
        pa.field("id_embedding", pa.list_(pa.float32())),     # identity embedding (embed: true)
        pa.field("id_backend", pa.string()),                  # the model that made it
        # a multi-ID record's every face, largest first (groups.keep; null on single-face records)
        pa.field("faces_bbox", pa.list_(pa.list_(pa.float32(), 4))),
        pa.field("faces_kps", pa.list_(pa.list_(pa.list_(pa.float32(), 2), 5))),
        pa.field("faces_det_score", pa.list_(pa.float32())),
        pa.field("faces_embedding", pa.list_(pa.list_(pa.float32()))),
    )
    scores = ("face_count", "face_ratio")
    Options = FaceOptions

    @property
    def device(self) -> str:
        return analyzer_device(self.analyzer_cfg())

    def models(self) -> list[tuple[str, str, str]]:
        return analyzer_models(self.analyzer_cfg())

    def needs(self) -> list:
        return analyzer_needs(self.analyzer_cfg())

    def analyzer_cfg(self) -> dict:
        """The face backend's block, as infu_model.faces takes it."""
        o = self.opts
        # the detector must find every face the multiple_faces rule counts
        return {"backend": o.backend, "dlib": {"recall_ratio": o.secondary_face_ratio ** 0.5, **plain(o.dlib)},
                "insightface": plain(o.insightface)}

    def setup(self) -> None:
        self.analyzer = make_face_analyzer(self.analyzer_cfg())

    def report(self) -> dict:
        return {"ran": True, "backend": self.opts.backend}

    def process(self, rows: list[dict]) -> None:
        for row in rows:
            self._one(row)

    def _one(self, row: dict) -> None:
        rgb = analysis_image(row)
        scale = row["width"] / rgb.shape[1]  # analysis -> original pixels
        faces = [f for f in self.analyzer.detect(rgb) if f.det_score >= self.opts.min_det_score]
        main, others = main_face(faces, self.opts.secondary_min_score)
        if main is None:
            row["face_count"] = 0
            return reject(row, "no_face")
        row["face_count"] = 1 + len(others)
        big = main.scaled(scale)
        row["bbox"] = big.bbox.astype(np.float32).tolist()
        row["kps"] = big.kps.astype(np.float32).tolist()
        row["det_score"] = float(main.det_score)
        row["face_ratio"] = float(big.area / (row["width"] * row["height"]))
        row["yaw"], row["pitch"] = head_pose(main.kps)
        group = [main, *(f for f in others if f.area >= self.opts.secondary_face_ratio * main.area)]
        if len(group) > 1 and not self.as_group(row, rgb, group, scale):
            return reject(row, "multiple_faces")
        if self.small(big, row):
            return reject(row, "small_face")
        if self.opts.embed:
            row["id_embedding"] = self.analyzer.embed(rgb, main).astype(np.float32).tolist()
            row["id_backend"] = self.analyzer.name

    def small(self, big, row: dict) -> bool:
        """A face (in original pixels) too small to learn an identity from."""
        return big.short_side < self.opts.min_face_px or big.area / (row["width"] * row["height"]) < self.opts.min_face_ratio

    def as_group(self, row: dict, rgb: np.ndarray, group: list, scale: float) -> bool:
        """Make ``row`` a multi-ID record of the faces in ``group`` when groups are kept and each passes."""
        g = self.opts.groups
        big = [f.scaled(scale) for f in group]
        if not g.keep or len(group) > g.max_faces or any(self.small(b, row) for b in big):
            return False
        row["faces_bbox"] = [b.bbox.astype(np.float32).tolist() for b in big]
        row["faces_kps"] = [b.kps.astype(np.float32).tolist() for b in big]
        row["faces_det_score"] = [float(f.det_score) for f in group]
        if self.opts.embed:
            row["faces_embedding"] = [self.analyzer.embed(rgb, f).astype(np.float32).tolist() for f in group]
        return True
