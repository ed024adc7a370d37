"""Face swap on generated targets: one interface, backends ``none`` and ``inswapper``.

``inswapper`` is insightface's ``inswapper_128.onnx`` (licence: non-commercial
research only) run through insightface's own ``INSwapper``: the target face is
aligned to 128x128 from its five keypoints, the source identity is the
L2-normalised ArcFace embedding (insightface's recognition model, e.g.
buffalo_l/w600k_r50.onnx) mapped through the ``emap`` matrix stored as the
model's last initializer, and the swapped crop is pasted back under an eroded,
blurred mask. Both model files come from local paths.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Literal

import numpy as np

from curation.engine import Stage
from infu_model import images
from infu_model.faces import analyzer_models, analyzer_needs, make_face_analyzer
from infu_model.hub import FILE, ModelError, ModelRef, Need, resolve
from synth.records import encode


class FaceSwapper:
    name = "none"

    def source_embedding(self, rgb: np.ndarray, kps) -> np.ndarray:
        raise NotImplementedError

    def swap(self, target_rgb: np.ndarray, target_kps, source_embedding: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _file(path, what: str) -> str:
    """The local file of a model reference; no public source is named for inswapper, so a missing one
    says what to give."""
    try:
        p = resolve(path, FILE)
    except ModelError as e:
        raise FileNotFoundError(f"{what}: {e}; give your copy as a path or hf://... in face_swap") from None
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {path} ({p} is not a file)")
    return str(p)


class InswapperSwapper(FaceSwapper):
    name = "inswapper_128"

    def __init__(self, model: str, recognition: str, device: str = "cpu"):
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX
        from insightface.model_zoo.inswapper import INSwapper

        from infu_model.runtime import ort_cuda, ort_session

        model = _file(model, "inswapper model (inswapper_128.onnx)")
        recognition = _file(recognition, "ArcFace recognition model (w600k_r50.onnx)")
        with contextlib.redirect_stdout(io.StringIO()):  # INSwapper prints its input shape
            self.swapper = INSwapper(model_file=model, session=ort_session(model, device))
        self.recognizer = ArcFaceONNX(model_file=recognition, session=ort_session(recognition, device))
        self.recognizer.prepare(0 if ort_cuda(device) else -1)

    def source_embedding(self, rgb: np.ndarray, kps) -> np.ndarray:
        from insightface.app.common import Face

        face = Face(kps=np.asarray(kps, np.float32))
        self.recognizer.get(np.ascontiguousarray(rgb[:, :, ::-1]), face)
        return face.normed_embedding

    def swap(self, target_rgb: np.ndarray, target_kps, source_embedding: np.ndarray) -> np.ndarray:
        from insightface.app.common import Face

        bgr = np.ascontiguousarray(target_rgb[:, :, ::-1])
        out = self.swapper.get(bgr, Face(kps=np.asarray(target_kps, np.float32)),
                               Face(embedding=np.asarray(source_embedding, np.float32)), paste_back=True)
        return np.ascontiguousarray(out[:, :, ::-1])


@dataclass(frozen=True)
class FaceSwapOptions:
    backend: Literal["none", "inswapper"]
    model: ModelRef      # inswapper_128.onnx (no public source: give a path or your own hf://...)
    recognition: ModelRef  # the ArcFace whose embeddings inswapper takes (buffalo_l's w600k_r50.onnx)
    device: str          # cpu | cuda[:N] (onnxruntime-gpu: scripts/setup.sh --gpu)
    faces: dict          # finds the target face (infu_model.faces.make_face_analyzer checks it)


class FaceSwapStage(Stage):
    """Swap the source identity onto each target's largest face (targets without a face pass unchanged;
    the ID filter rejects them)."""

    name = "face_swap"
    Options = FaceSwapOptions

    @property
    def enabled(self) -> bool:
        return self.opts.backend != "none"

    def models(self) -> list[tuple[str, str, str]]:
        if not self.enabled:
            return []
        return [("inswapper + ArcFace", self.device, "onnxruntime"), *analyzer_models(self.opts.faces)]

    def needs(self) -> list:
        if not self.enabled:
            return []
        return [*Need.of(self.opts.model, FILE, "inswapper face swapper"),
                *Need.of(self.opts.recognition, FILE, "inswapper's ArcFace"), *analyzer_needs(self.opts.faces)]

    def setup(self) -> None:
        self.swapper = InswapperSwapper(self.opts.model, self.opts.recognition, self.device)  # the one backend besides none
        self.faces = make_face_analyzer(self.opts.faces)

    def report(self) -> dict:
        return {"ran": self.enabled, "backend": self.opts.backend}

    def process(self, rows: list[dict]) -> None:
        sources: dict[str, np.ndarray] = {}
        for row in rows:
            if row["_source_kps"] is None:
                continue
            target = images.decode(row["target_image"]).rgb
            faces = self.faces.detect(target)
            if not faces:
                continue
            if row["source_id"] not in sources:
                sources[row["source_id"]] = self.swapper.source_embedding(images.decode(row["_source_image"]).rgb,
                                                                          row["_source_kps"])
            swapped = self.swapper.swap(target, faces[0].kps, sources[row["source_id"]])
            row["target_image"] = encode(swapped, row["image_format"] or "png")
            row["face_swap"] = self.swapper.name
