"""Caption stage: one captioner (BLIP-2, InternVL or a chat VLM) as a Ray actor pool.

Each kept caption is appended to the record's ``captions`` with its ``source``
(the stage's ``name``: ``blip2``, ``internvl``, ...), after hygiene
(curation/caption_text.py). A dropped output is recorded in ``caption_drops``
with its reason (``empty_caption``, ``degenerate_caption``); the row itself is
kept — a failed caption never costs a training image. Dataset captions already
on the row are cleaned the same way (source ``dataset``). Without a model path
the stage does not run and says so; it never invents text.
"""
from __future__ import annotations

import inspect
import io

from PIL import Image

from curation.caption_text import clean_caption
from curation.captioners import BACKENDS, check_folder
from curation.stage import Stage


class CaptionStage(Stage):
    name = "caption"
    reasons = ()  # rows are never rejected for their captions
    default_resources = {"num_cpus": 0.5, "num_gpus": 0, "batch_size": 8, "concurrency": 1}
    gpu_share = 0.5  # a VLM of a few billion parameters: two per GPU

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.source = self.cfg.get("name", "caption")
        self.backend = self.cfg.get("backend", self.source)
        self.max_chars = int(self.cfg.get("max_chars", 400))
        self.names = frozenset(self.cfg.get("names") or ())
        # images per generate() call; a Ray batch (resources.batch_size) may hold several, which
        # spreads Ray's per-task cost over more rows without changing what the model sees
        self.generate_batch = int(self.cfg.get("generate_batch") or self.resources.batch_size)
        self.model = None

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.get("model"))

    def report(self) -> dict:
        if not self.enabled:
            return {"ran": False, "note": f"no local {self.backend} model configured (model: path); "
                                          "dataset captions kept, no text invented"}
        return {"ran": True, "backend": self.backend, "model": self.cfg["model"]}

    def check(self) -> None:
        """Cheap checks of the backend and the model folder (no weights read), run before the job starts."""
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown caption backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        check_folder(self.backend, self.cfg["model"])

    def setup(self) -> None:
        self.check()
        cls = BACKENDS[self.backend]
        # each backend takes the config keys its constructor names (prompt, instruction, num_beams, ...)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
        kw = {k: v for k, v in self.cfg.items() if k in accepted and v is not None}
        self.model = cls(self.cfg["model"], **kw)

    def process(self, rows: list[dict]) -> None:
        for i in range(0, len(rows), self.generate_batch):
            self._caption(rows[i:i + self.generate_batch])

    def _caption(self, rows: list[dict]) -> None:
        images = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows]
        raw = self.model(images)
        # BLIP-2's prefix is part of its caption; chat models may echo their instruction
        echo = None if self.backend == "blip2" else getattr(self.model, "instruction", None)
        for row, text in zip(rows, raw):
            clean, reason = clean_caption(text, echo, self.max_chars, self.names)
            if clean is None:
                row["caption_drops"] = list(row.get("caption_drops") or []) + [{"source": self.source, "reason": reason}]
            else:
                row["captions"] = list(row.get("captions") or []) + [{"source": self.source, "text": clean}]


def clean_dataset_captions(row: dict, max_chars: int = 400, names=frozenset()) -> None:
    """Hygiene for the captions a dataset brought (CelebV-Text, CosmicManHQ, sidecars)."""
    kept, drops = [], list(row.get("caption_drops") or [])
    for c in row.get("captions") or []:
        if c["source"] != "dataset":
            kept.append(c)
            continue
        clean, reason = clean_caption(c["text"], None, max_chars, names)
        if clean is None:
            drops.append({"source": "dataset", "reason": reason})
        elif clean not in (k["text"] for k in kept):
            kept.append({"source": "dataset", "text": clean})
    row["captions"], row["caption_drops"] = kept, drops
