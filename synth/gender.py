"""Gender of a source identity, for pairing it with prompts.

Order of trust: the dataset's own label; else a configured classifier on the
source's face; else unknown (the identity then only gets gender-neutral prompts).
The one classifier backend is insightface's ``genderage.onnx`` (in the buffalo_l
pack), run through insightface's own ``Attribute`` wrapper from a local path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from infu_model.hub import FILE, ModelRef, Need, resolve
from synth.prompts import normalise_gender


class GenderClassifier:
    name = ""

    def predict(self, rgb: np.ndarray, bbox) -> str:
        raise NotImplementedError


class InsightFaceGenderAge(GenderClassifier):
    name = "insightface_genderage"

    def __init__(self, model: str):
        from insightface.model_zoo.attribute import Attribute

        path = resolve(model, FILE)
        if not path.is_file():
            raise FileNotFoundError(f"gender model not found: {model} (an insightface genderage.onnx)")
        self.model = Attribute(model_file=str(path))
        self.model.prepare(-1)

    def predict(self, rgb: np.ndarray, bbox) -> str:
        from insightface.app.common import Face

        gender, _age = self.model.get(np.ascontiguousarray(rgb[:, :, ::-1]), Face(bbox=np.asarray(bbox, np.float32)))
        return "male" if int(gender) == 1 else "female"


@dataclass(frozen=True)
class GenderOptions:
    """A synth job's ``gender`` block: the classifier for sources without a dataset label."""
    backend: Literal["none", "insightface_genderage"]
    model: ModelRef           # insightface_genderage: a genderage.onnx (antelopev2's, in the InfU repo)


def gender_needs(opts: GenderOptions) -> list:
    return [] if opts.backend == "none" else Need.of(opts.model, FILE, "gender classifier")


def make_gender_classifier(opts: GenderOptions) -> GenderClassifier | None:
    return None if opts.backend == "none" else InsightFaceGenderAge(opts.model)


def resolve_gender(label, classifier: GenderClassifier | None, rgb_fn, bbox) -> tuple[str | None, str | None]:
    """(gender, where it came from): the label, else the classifier (``rgb_fn`` decodes lazily), else (None, None)."""
    g = normalise_gender(label)
    if g is not None:
        return g, "label"
    if classifier is not None and bbox is not None:
        return classifier.predict(rgb_fn(), bbox), "classifier"
    return None, None
