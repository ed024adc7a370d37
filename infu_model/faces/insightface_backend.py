"""The face backend InfU itself uses: antelopev2 SCRFD + facexlib's IR-SE50 ArcFace.

Exactly as the published InfU pipeline computes identity: detect on BGR at det
size 640, then 320, then 160 until something is found; take the largest face;
``norm_crop`` its five keypoints to 112x112 (BGR), scale to [-1, 1], ArcFace,
L2-normalise. Both models are model references (infu_model/hub.py): by default antelopev2's SCRFD
from the InfU repo (``supports/insightface``, the folder the official app passes as its insightface
root; only the detector is fetched) and facexlib's ArcFace by its release URL and sha256. A missing
file raises an error naming it (insightface would otherwise try a download of its own).
"""
from __future__ import annotations


import numpy as np
import torch

from infu_model.faces import Face, FaceAnalyzer, FaceModelMissing, largest_first
from infu_model.faces.arcface import load_arcface
from infu_model.hub import FILE, ModelError, Need, patterns, resolve
from infu_model.published import ARCFACE, INSIGHTFACE_ROOT

SCRFD_FILE = "scrfd_10g_bnkps.onnx"


def model_needs(root: str = INSIGHTFACE_ROOT, pack: str = "antelopev2", arcface: str = ARCFACE, **_) -> list[Need]:
    """The two models this backend loads (the detector alone out of its pack)."""
    return [*Need.of(root, patterns(f"models/{pack}/{SCRFD_FILE}"), f"SCRFD detector ({pack})"),
            *Need.of(arcface, FILE, "ArcFace IR-SE50")]


def arcface_input(bgr: np.ndarray, kps: np.ndarray) -> torch.Tensor:
    """The 1x3x112x112 tensor InfU feeds ArcFace: aligned BGR crop scaled to [-1, 1]."""
    from insightface.utils import face_align

    crop = face_align.norm_crop(bgr, landmark=np.asarray(kps, np.float32), image_size=112)
    return torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).float().div(255.0).mul(2.0).sub(1.0)


class InsightFaceAnalyzer(FaceAnalyzer):
    name = "arcface_ir_se50"
    embedding_dim = 512
    metric = "cosine"

    def __init__(self, root: str = INSIGHTFACE_ROOT, pack: str = "antelopev2", arcface: str = ARCFACE,
                 det_sizes=(640, 320, 160), det_thresh: float = 0.5, device: str = "cpu"):
        detector, arcface_need = model_needs(root, pack, arcface)
        try:
            det_file = resolve(detector.ref, detector.selection) / "models" / pack / SCRFD_FILE
            if not det_file.is_file():
                raise FaceModelMissing(f"SCRFD detector not found: {det_file} (the {pack} pack unpacked under "
                                       f"{root}/models)")
            arc = resolve(arcface_need.ref, arcface_need.selection)
        except ModelError as e:
            raise FaceModelMissing(str(e)) from None
        if not arc.is_file():
            raise FaceModelMissing(f"ArcFace weights not found: {arc} (facexlib's recognition_arcface_ir_se50.pth)")
        from insightface.model_zoo.scrfd import SCRFD

        from infu_model.runtime import ort_cuda, ort_session, torch_device

        self.detector = SCRFD(model_file=str(det_file), session=ort_session(det_file, device))
        self.detector.prepare(0 if ort_cuda(device) else -1, det_thresh=det_thresh)
        self.det_sizes = [int(s) for s in det_sizes]
        self.device = torch_device(device)  # ArcFace is torch: its own fallback, said by the job's start line
        self.arcface = load_arcface(arc, device=self.device)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        for size in self.det_sizes:
            boxes, kpss = self.detector.detect(bgr, input_size=(size, size))
            if len(boxes):
                return largest_first([Face(b[:4].astype(np.float32), k.astype(np.float32), float(b[4]))
                                      for b, k in zip(boxes, kpss)])
        return []

    @torch.no_grad()
    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        x = arcface_input(np.ascontiguousarray(rgb[:, :, ::-1]), face.kps).to(self.device)
        return self.arcface(x)[0].float().cpu().numpy()
