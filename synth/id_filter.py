"""ID filter: keep a synthetic target only if it is clearly the source person, in a normal pose.

Rejects (each row keeps the scores it got before the reason was decided):
- ``no_face`` / ``multiple_faces``: the target must show exactly one clear face
  (a second face counts when its score reaches ``secondary_min_score`` and its box
  is at least ``secondary_face_ratio`` of the main face's, as in curation);
- ``low_id_similarity``: identity under the filter's face backend against the real
  source - cosine below ``min_cosine`` for ArcFace-style backends, euclidean
  distance above ``max_distance`` for dlib (same person ~0.07-0.5, others ~0.7+);
- ``extreme_pose``: |yaw| or |pitch| (from the five keypoints) beyond the limits;
- ``low_aesthetic``: below ``min_aesthetic`` when an aesthetic model is configured.
Near-duplicate targets are decided after the run (pHash, like curation's dedup).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from curation.quality import phash_hex
from curation.engine import Stage, between, reject
from infu_model import images
from infu_model.faces import (analyzer_device, analyzer_models, analyzer_needs, cosine, head_pose, main_face, make_face_analyzer,
                              stored_embedding)
from infu_model.hub import FILE, FOLDER, ModelRef, Need
from infu_model.runtime import is_cuda


@dataclass(frozen=True)
class AestheticOptions:
    clip: ModelRef | None    # CLIP ViT-L/14 (path or hf://...); null: no aesthetic filter
    head: ModelRef | None    # the LAION head's safetensors (or .pth)
    min_score: float | None = between(0, 10)
    device: str


@dataclass(frozen=True)
class IDFilterOptions:
    faces: dict              # the face backend's block (infu_model.faces.make_face_analyzer checks it)
    min_cosine: float = between(-1, 1)
    max_distance: float = between(0)
    max_abs_yaw: float = between(0, 180)
    max_abs_pitch: float = between(0, 180)
    secondary_face_ratio: float = between(0, 1)
    secondary_min_score: float = between(-1, 3)
    aesthetic: AestheticOptions


class IDFilterStage(Stage):
    name = "id_filter"
    reasons = ("no_face", "multiple_faces", "source_no_face", "low_id_similarity", "extreme_pose", "low_aesthetic")
    Options = IDFilterOptions

    @property
    def device(self) -> str:
        devices = (analyzer_device(self.opts.faces), self.opts.aesthetic.device)
        return next((d for d in devices if is_cuda(d)), "cpu")

    def models(self) -> list[tuple[str, str, str]]:
        a = self.opts.aesthetic
        return [*analyzer_models(self.opts.faces), *([("aesthetic CLIP", a.device, "torch")] if a.clip else [])]

    def needs(self) -> list:
        a = self.opts.aesthetic
        aesthetic = [*Need.of(a.clip, FOLDER, "aesthetic CLIP"), *Need.of(a.head, FILE, "aesthetic head")] if a.clip else []
        return [*analyzer_needs(self.opts.faces), *aesthetic]

    def setup(self) -> None:
        self.faces = make_face_analyzer(self.opts.faces)
        self.aesthetic = None
        a = self.opts.aesthetic
        if a.clip:
            from infu_model.scoring import AestheticScorer

            self.aesthetic = AestheticScorer(a.clip, a.head, a.device)

    def report(self) -> dict:
        return {"ran": True, "backend": self.opts.faces.get("backend", "dlib"),
                "aesthetic": "ran" if self.opts.aesthetic.clip else "not configured"}

    def process(self, rows: list[dict]) -> None:
        sources: dict[str, np.ndarray | None] = {}
        for row in rows:
            if row["source_id"] not in sources:
                sources[row["source_id"]] = self.source_embedding(row)
            self._one(row, sources[row["source_id"]])

    def source_embedding(self, row: dict) -> np.ndarray | None:
        """The SPSS record's embedding when this backend made it; else the source image's largest face."""
        stored = stored_embedding(row["_source_embedding"], row["_source_backend"], self.faces)
        if stored is not None:
            return stored
        rgb = images.decode(row["_source_image"]).rgb
        faces = self.faces.detect(rgb)
        return self.faces.embed(rgb, faces[0]) if faces else None

    def _one(self, row: dict, source: np.ndarray | None) -> None:
        rgb = images.decode(row["target_image"]).rgb
        row["phash"] = phash_hex(rgb)
        main, others = main_face(self.faces.detect(rgb), self.opts.secondary_min_score)
        row["face_count"] = 1 + len(others) if main is not None else 0
        if main is None:
            return reject(row, "no_face")
        row["target_bbox"] = main.bbox.astype(np.float32).tolist()
        row["target_kps"] = main.kps.astype(np.float32).tolist()
        row["target_det_score"] = float(main.det_score)
        row["yaw"], row["pitch"] = head_pose(main.kps)
        if any(f.area >= self.opts.secondary_face_ratio * main.area for f in others):
            return reject(row, "multiple_faces")
        row["id_filter_backend"] = self.faces.name
        if source is None:
            return reject(row, "source_no_face")
        emb = self.faces.embed(rgb, main)
        row["id_similarity"] = float(cosine(emb, source)[0])
        row["id_distance"] = float(np.linalg.norm(emb - source))
        if self.aesthetic is not None:
            row["aesthetic"] = float(self.aesthetic([Image.fromarray(rgb)])[0])
        if not self.same_person(row):
            return reject(row, "low_id_similarity")
        if abs(row["yaw"]) > self.opts.max_abs_yaw or abs(row["pitch"]) > self.opts.max_abs_pitch:
            return reject(row, "extreme_pose")
        low = self.opts.aesthetic.min_score
        if low is not None and row["aesthetic"] is not None and row["aesthetic"] < low:
            return reject(row, "low_aesthetic")

    def same_person(self, row: dict) -> bool:
        if self.faces.metric == "cosine":
            return row["id_similarity"] >= self.opts.min_cosine
        return row["id_distance"] <= self.opts.max_distance
