"""A user's post-processing hook on each target (e.g. a face restorer or an upscaler).

``hook: "package.module:function"``; the function takes (PIL RGB image, row dict)
and returns a PIL image; ``args`` are passed as keyword arguments. The hook is
imported once per actor.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


from curation.engine import Stage
from infu_model import images
from synth.records import encode


def load_hook(spec: str):
    module, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"postprocess hook {spec!r}: expected 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"postprocess hook {spec!r}: {e}") from None


@dataclass(frozen=True)
class PostprocessOptions:
    hook: str | None     # "package.module:function" taking (PIL image, row, **args) -> PIL image
    args: dict


class PostprocessStage(Stage):
    name = "postprocess"
    Options = PostprocessOptions

    def __init__(self, opts, resources, label=None):
        super().__init__(opts, resources, label)
        if self.enabled:  # a hook that does not import is refused in the driver, before any pair is planned
            load_hook(self.opts.hook)

    @property
    def enabled(self) -> bool:
        return bool(self.opts.hook)

    def setup(self) -> None:
        self.hook = load_hook(self.opts.hook)
        self.args = dict(self.opts.args)

    def report(self) -> dict:
        return {"ran": self.enabled, "hook": self.opts.hook}

    def process(self, rows: list[dict]) -> None:
        for row in rows:
            out = self.hook(images.rgb_image(row["target_image"]), row, **self.args)
            row["target_image"] = encode(out, row["image_format"] or "png")
            row["width"], row["height"] = out.size
            row["bucket"] = f"{out.width}x{out.height}"
