"""A filter stage added the way docs/curate.md says, as a user would: this one file, one line in
``curation/registry.py: STAGES`` and one block in the curate config's ``stages`` (the tests set both).

It rejects photos without colour (scans, greyscale conversions): a colour model learns nothing of skin
tones from them. Its score is Hasler and Suesstrunk's colourfulness of the decoded analysis image."""
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.engine import Stage, between, reject
from curation.records import ANALYSIS, analysis_image


@dataclass(frozen=True)
class ColourOptions:
    min_colourfulness: float = between(0)


class ColourStage(Stage):
    name = "colour"
    reasons = ("greyscale",)
    reads = ANALYSIS
    writes = (pa.field("colourfulness", pa.float32()),)  # Hasler-Suesstrunk M, 0 for grey
    scores = ("colourfulness",)
    stateful = False
    Options = ColourOptions

    def process(self, rows: list[dict]) -> None:
        for row in rows:
            row["colourfulness"] = score = colourfulness(analysis_image(row))
            if score < self.opts.min_colourfulness:
                reject(row, "greyscale")


def colourfulness(rgb: np.ndarray) -> float:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
