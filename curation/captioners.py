"""Caption models from local folders, batched: BLIP-2, InternVL in transformers'
native format, any chat VLM that transformers loads natively, and the original
InternVL2 checkpoints (which ship their own modeling code).

Each returns raw text per image; hygiene happens in the caption stage.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from infu_model.hub import FOLDER, resolve
from infu_model.runtime import is_cuda, torch_device

DEFAULT_INSTRUCTION = ("Describe this photo of a person in one or two sentences for an image generator: clothing, "
                       "setting, pose, expression, lighting and camera framing. Do not name the person.")


def _local(model, fetch: bool | None = None) -> Path:
    """The captioner's folder from its model reference (a path, or the Hub cache the driver filled)."""
    p = resolve(model, FOLDER, fetch)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"captioner not found: {model} ({p} holds no config.json)")
    return p


def _torch_dtype(name: str | None, device: str):
    """``dtype: null`` picks bfloat16 on a GPU and float32 on the CPU (where bf16 matmuls are slow)."""
    import torch

    if name is None:
        return torch.bfloat16 if is_cuda(device) else torch.float32
    return getattr(torch, name)


def _config(p: Path) -> dict:
    return json.loads((p / "config.json").read_text())


class Blip2Captioner:
    """``Blip2ForConditionalGeneration`` + its processor; ``prompt`` is BLIP-2's text prefix."""

    def __init__(self, model: str, device: str = "cpu", dtype: str | None = None, prompt: str = "a photo of",
                 max_new_tokens: int = 40, num_beams: int = 1):
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        p, device = _local(model), torch_device(device)
        self.processor = Blip2Processor.from_pretrained(p, local_files_only=True)
        self.model = Blip2ForConditionalGeneration.from_pretrained(
            p, local_files_only=True, dtype=_torch_dtype(dtype, device)).to(device).eval()
        self.device, self.prompt = device, prompt
        self.gen = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False}

    def __call__(self, images: list[Image.Image]) -> list[str]:
        import torch

        text = [self.prompt] * len(images) if self.prompt else None
        inputs = self.processor(images=images, text=text, return_tensors="pt", padding=True).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, **self.gen)
        # the prefix is part of the caption for BLIP-2 ("a photo of" + "a woman ..."): keep the whole text
        return self.processor.batch_decode(out, skip_special_tokens=True)


class ChatVLMCaptioner:
    """Any image-text-to-text model with a chat template (LLaVA, Qwen2-VL, ...)."""

    def __init__(self, model: str, device: str = "cpu", dtype: str | None = None, instruction: str = DEFAULT_INSTRUCTION,
                 max_new_tokens: int = 80):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        p, device = _local(model), torch_device(device)
        self.processor = AutoProcessor.from_pretrained(p, local_files_only=True)
        self.processor.tokenizer.padding_side = "left"  # batched generation with a decoder-only LM
        self.model = AutoModelForImageTextToText.from_pretrained(
            p, local_files_only=True, dtype=_torch_dtype(dtype, device)).to(device).eval()
        self.device, self.instruction = device, instruction
        self.gen = {"max_new_tokens": max_new_tokens, "do_sample": False}
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        self.prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def __call__(self, images: list[Image.Image]) -> list[str]:
        import torch

        inputs = self.processor(images=images, text=[self.prompt] * len(images), return_tensors="pt",
                                padding=True).to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, **self.gen)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class InternVLCaptioner:
    """InternVL (2, 2.5, 3) in transformers' native format (the converted ``*-hf`` checkpoints:
    ``InternVLForConditionalGeneration``), asked ``instruction`` through the checkpoint's chat
    template. Each image is cut into at most ``max_tiles`` tiles at the vision tower's size (plus
    a thumbnail when more than one; InternVL's own default is 12, one tile describes a portrait).

    The prompt is built as ``InternVLProcessor`` builds it (each image's ``<IMG_CONTEXT>`` becomes
    ``<img>``, ``image_seq_length`` context tokens per tile, ``</img>``) from the checkpoint's own
    tokenizer, image processor and chat template: the processor class insists on a video
    processor, which needs torchvision (not installable beside the CPU torch here)."""

    def __init__(self, model: str, device: str = "cpu", dtype: str | None = None, instruction: str = DEFAULT_INSTRUCTION,
                 max_new_tokens: int = 80, max_tiles: int = 1):
        from transformers import InternVLForConditionalGeneration

        p, device = _local(model), torch_device(device)
        self.tokenizer, self.images, template, self.seq_len = internvl_parts(p)
        self.model = InternVLForConditionalGeneration.from_pretrained(
            p, local_files_only=True, dtype=_torch_dtype(dtype, device)).to(device).eval()
        self.device, self.instruction, self.max_tiles = device, instruction, int(max_tiles)
        self.gen = {"max_new_tokens": max_new_tokens, "do_sample": False,
                    "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        self.prompt = self.tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                                         tokenize=False)
        if self.prompt.count(self.tokenizer.context_image_token) != 1:
            raise ValueError(f"{p}: the chat template does not place one {self.tokenizer.context_image_token} "
                             f"per image: {self.prompt!r}")

    def inputs(self, images: list[Image.Image]):
        """input_ids, attention_mask and pixel_values (all tiles, image after image) for one batch."""
        tok = self.tokenizer
        pix = self.images(images, crop_to_patches=self.max_tiles > 1, max_patches=self.max_tiles, return_tensors="pt")
        head, tail = self.prompt.split(tok.context_image_token, 1)
        text = [f"{head}{tok.start_image_token}{tok.context_image_token * self.seq_len * int(n)}{tok.end_image_token}{tail}"
                for n in pix["num_patches"]]
        enc = tok(text, return_tensors="pt", padding=True)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "pixel_values": pix["pixel_values"]}

    def __call__(self, images: list[Image.Image]) -> list[str]:
        import torch

        batch = {k: v.to(self.device) for k, v in self.inputs(images).items()}
        batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            out = self.model.generate(**batch, **self.gen)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def internvl_parts(p: Path):
    """The tokenizer, image processor, chat template and image tokens per tile of a native InternVL
    checkpoint, checked against its config so a mismatch fails here, naming the folder."""
    from transformers import AutoImageProcessor, AutoTokenizer

    cfg = _config(p)
    if cfg.get("model_type") != "internvl":
        hint = " (an original InternVL2 checkpoint: backend internvl2)" if cfg.get("model_type") == "internvl_chat" else ""
        raise ValueError(f"{p} is not a native InternVL checkpoint: config.json model_type is "
                         f"{cfg.get('model_type')!r}, expected 'internvl'{hint}")
    proc = json.loads((p / "processor_config.json").read_text()) if (p / "processor_config.json").is_file() else {}
    template = _chat_template(p)
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True, padding_side="left")
    images = AutoImageProcessor.from_pretrained(p, local_files_only=True)
    seq_len = int(proc.get("image_seq_length", 256))
    vision = cfg.get("vision_config", {})
    size, patch = (_pair(vision.get(k, d)) for k, d in (("image_size", 448), ("patch_size", 14)))
    tokens = (size[0] // patch[0]) * (size[1] // patch[1]) * cfg.get("downsample_ratio", 0.5) ** 2
    expected = {"image token id": (getattr(tok, "context_image_token_id", None), cfg.get("image_token_id", 151667)),
                "image tokens per tile": (seq_len, int(tokens)),
                "tile size": ([images.size.get("height"), images.size.get("width")], size)}
    bad = [f"{k}: processor {got}, model {want}" for k, (got, want) in expected.items() if got != want]
    if bad:
        raise ValueError(f"{p}: the processor does not match the model ({'; '.join(bad)})")
    return tok, images, template, seq_len


def _pair(v) -> list[int]:
    return list(v) if isinstance(v, (list, tuple)) else [v, v]


def check_folder(backend: str, model: str) -> None:
    """Fail on the driver, before any row is read, when a folder cannot serve ``backend`` (never fetches:
    a model not yet in the cache raises ``ModelNotCached``)."""
    p = _local(model, fetch=False)
    want = {"blip2": "blip-2", "internvl2": "internvl_chat"}.get(backend)
    if backend == "internvl":
        internvl_parts(p)
    elif want and _config(p).get("model_type") != want:
        raise ValueError(f"{p} is not a {backend} checkpoint: config.json model_type is "
                         f"{_config(p).get('model_type')!r}, expected {want!r}")


def _chat_template(p: Path) -> str:
    if (p / "chat_template.jinja").is_file():
        return (p / "chat_template.jinja").read_text()
    for f in (p / "chat_template.json", p / "processor_config.json"):
        if f.is_file() and json.loads(f.read_text()).get("chat_template"):
            return json.loads(f.read_text())["chat_template"]
    raise FileNotFoundError(f"{p}: no chat template (chat_template.jinja or chat_template.json)")


class InternVL2Captioner:
    """An original InternVL2 checkpoint with its own modeling code (``trust_remote_code``: the stage
    runs it only when its config says ``trust_remote_code: true``, and a Hub checkpoint only at a
    pinned commit, so the code that runs is the code that was read). One 448x448 tile per image (InternVL's ImageNet normalisation), the
    model's ``batch_chat``. NOT exercised offline (no InternVL2 code ships in a package):
    prefer ``internvl`` on the converted ``*-hf`` checkpoint, which the tests run."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, model: str, device: str = "cpu", dtype: str | None = None, instruction: str = DEFAULT_INSTRUCTION,
                 max_new_tokens: int = 80, tile: int = 448):
        from transformers import AutoModel, AutoTokenizer

        p, device = _local(model), torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=True, use_fast=False)
        self.model = AutoModel.from_pretrained(p, local_files_only=True, trust_remote_code=True,
                                               dtype=_torch_dtype(dtype, device)).to(device).eval()
        self.device, self.tile = device, tile
        self.question = "<image>\n" + instruction
        self.gen = {"max_new_tokens": max_new_tokens, "do_sample": False}

    def _pixels(self, im: Image.Image):
        import numpy as np
        import torch

        a = np.asarray(im.convert("RGB").resize((self.tile, self.tile), Image.Resampling.BICUBIC), np.float32) / 255
        a = (a - np.array(self.MEAN, np.float32)) / np.array(self.STD, np.float32)
        return torch.from_numpy(a).permute(2, 0, 1)

    def __call__(self, images: list[Image.Image]) -> list[str]:
        import torch

        pixels = torch.stack([self._pixels(im) for im in images]).to(self.device, self.model.dtype)
        with torch.no_grad():
            return self.model.batch_chat(self.tokenizer, pixels, num_patches_list=[1] * len(images),
                                         questions=[self.question] * len(images), generation_config=self.gen)


BACKENDS = {"blip2": Blip2Captioner, "internvl": InternVLCaptioner, "chat_vlm": ChatVLMCaptioner,
            "internvl2": InternVL2Captioner}
