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
import re
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from curation.caption_text import clean_caption
from curation.records import CAPTION
from curation.captioners import BACKENDS, check_folder
from curation.engine import ConfigError, Stage, between
from infu_model.hub import FOLDER, ModelNotCached, ModelRef, Need
from infu_model.images import rgb_image

@dataclass(frozen=True)
class CaptionOptions:
    backend: Literal[tuple(BACKENDS)]
    model: ModelRef | None                       # path or hf://... (infu_model/hub.py); null: does not run
    device: str
    dtype: Literal["bfloat16", "float16", "float32"] | None
    max_new_tokens: int = between(1)
    generate_batch: int | None = between(1)      # images per generate() call (null: the Ray batch)
    max_chars: int | None = between(1, default=None)   # set by the job (its max_chars)
    names: tuple[str, ...] = ()                  # set by the job: real names to replace (its names_file)
    prompt: str | None = None                    # blip2: its text prefix
    num_beams: int | None = between(1, default=None)   # blip2
    instruction: str | None = None               # chat backends
    max_tiles: int | None = between(1, default=None)   # internvl
    # internvl2 only: run the modelling code that ships inside the checkpoint (a Hub one must be pinned to a
    # commit: hf://OWNER/NAME@<40-hex commit>); every other backend runs transformers' own code
    trust_remote_code: bool | None = None        # null: false


class CaptionStage(Stage):
    """Its ``label`` (the block's ``name``: blip2, internvl, ...; else its backend) is the ``source`` of its
    captions."""

    name = "caption"
    reasons = ()  # rows are never rejected for their captions
    reads = ("image",)
    writes = (
        pa.field("captions", pa.list_(CAPTION)),  # adds its own to the dataset's, with its label as source
        pa.field("caption_drops", pa.list_(pa.struct([("source", pa.string()), ("reason", pa.string())]))),
    )

    @property
    def label(self) -> str:
        return self._label or self.opts.backend
    gpu_share = 0.5  # a VLM of a few billion parameters: two per GPU
    Options = CaptionOptions

    def __init__(self, opts, resources, label=None):
        super().__init__(opts, resources, label)
        self.names = frozenset(self.opts.names)
        # images per generate() call; a Ray batch (resources.batch_size) may hold several, which
        # spreads Ray's per-task cost over more rows without changing what the model sees
        self.generate_batch = self.opts.generate_batch or self.resources.batch_size
        self.kwargs = self.backend_kwargs()

    @property
    def enabled(self) -> bool:
        return bool(self.opts.model)

    def report(self) -> dict:
        if not self.enabled:
            return {"ran": False, "note": f"no {self.opts.backend} model configured (model: null); "
                                          "dataset captions kept, no text invented"}
        return {"ran": True, "backend": self.opts.backend, "model": str(self.opts.model)}

    def needs(self) -> list:
        return Need.of(self.opts.model, FOLDER, f"{self.label} captioner") if self.enabled else []

    def check_code(self) -> None:
        """Code from a checkpoint runs only when asked for, and from a Hub checkpoint only at a pinned commit."""
        o, ref = self.opts, self.opts.model
        if o.backend != "internvl2":
            if o.trust_remote_code:
                raise ConfigError(f"captioner {self.label!r}: trust_remote_code is for the internvl2 backend only; "
                                  f"{o.backend} runs transformers' own code")
            return
        if not o.trust_remote_code:
            raise ConfigError(f"captioner {self.label!r}: the internvl2 backend runs the modelling code inside the "
                              "checkpoint: set trust_remote_code: true to allow it (or use the internvl backend on "
                              "a converted *-hf checkpoint, which runs none)")
        if ref is not None and ref.kind == "hub" and not re.fullmatch(r"[0-9a-f]{40}", ref.revision):
            raise ConfigError(f"captioner {self.label!r}: {ref} runs code from the Hub: pin it to a commit "
                              f"(hf://{ref.location}@<40-hex commit>{'/' + ref.path if ref.path else ''}) so that "
                              "the code that runs is the code you read")

    def check(self) -> None:
        """Cheap checks of the backend and the model folder (no weights read), run before the job starts;
        a Hub model not fetched yet is checked once the job has fetched it (run_caption checks again)."""
        self.check_code()
        try:
            check_folder(self.opts.backend, self.opts.model)
        except ModelNotCached:
            pass

    def backend_kwargs(self) -> dict:
        """The options this backend's constructor takes (prompt, instruction, num_beams, ...); one it
        does not take is a config error, not a setting silently dropped."""
        accepted = set(inspect.signature(BACKENDS[self.opts.backend].__init__).parameters) - {"self", "model"}
        given = {k: v for k, v in vars(self.opts).items() if v is not None}
        wrong = sorted(set(given) - accepted - {"backend", "model", "max_chars", "names", "generate_batch",
                                                "trust_remote_code"})
        if wrong:
            raise ConfigError(f"captioner {self.label!r}: {', '.join(wrong)} not used by the {self.opts.backend} backend "
                              f"(it takes {', '.join(sorted(accepted))})")
        return {k: v for k, v in given.items() if k in accepted}

    def setup(self) -> None:
        self.check()
        self.model = BACKENDS[self.opts.backend](self.opts.model, **self.kwargs)

    def process(self, rows: list[dict]) -> None:
        for i in range(0, len(rows), self.generate_batch):
            self._caption(rows[i:i + self.generate_batch])

    def _caption(self, rows: list[dict]) -> None:
        images = [rgb_image(r["image"]) for r in rows]  # the pixels curation judged and training sees
        raw = self.model(images)
        # BLIP-2's prefix is part of its caption; chat models may echo their instruction
        echo = None if self.opts.backend == "blip2" else getattr(self.model, "instruction", None)
        for row, text in zip(rows, raw):
            clean, reason = clean_caption(text, echo, self.opts.max_chars, self.names)
            if clean is None:
                row["caption_drops"] = list(row.get("caption_drops") or []) + [{"source": self.label, "reason": reason}]
            else:
                row["captions"] = list(row.get("captions") or []) + [{"source": self.label, "text": clean}]


def clean_dataset_captions(row: dict, max_chars: int, names=frozenset()) -> None:
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
