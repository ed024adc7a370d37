"""Caption models from local folders, batched: BLIP-2, any chat VLM that
transformers loads natively, and InternVL2 (which ships its own modeling code).

Each returns raw text per image; hygiene happens in the caption stage.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

DEFAULT_INSTRUCTION = ("Describe this photo of a person in one or two sentences for an image generator: clothing, "
                       "setting, pose, expression, lighting and camera framing. Do not name the person.")


def _local(path: str) -> Path:
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"captioner not found: {p} (a local model folder with config.json)")
    return p


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


class Blip2Captioner:
    """``Blip2ForConditionalGeneration`` + its processor; ``prompt`` is BLIP-2's text prefix."""

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", prompt: str = "a photo of",
                 max_new_tokens: int = 40, num_beams: int = 1):
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        p = _local(model)
        self.processor = Blip2Processor.from_pretrained(p, local_files_only=True)
        self.model = Blip2ForConditionalGeneration.from_pretrained(
            p, local_files_only=True, dtype=_torch_dtype(dtype)).to(device).eval()
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

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32", instruction: str = DEFAULT_INSTRUCTION,
                 max_new_tokens: int = 80):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        p = _local(model)
        self.processor = AutoProcessor.from_pretrained(p, local_files_only=True)
        self.processor.tokenizer.padding_side = "left"  # batched generation with a decoder-only LM
        self.model = AutoModelForImageTextToText.from_pretrained(
            p, local_files_only=True, dtype=_torch_dtype(dtype)).to(device).eval()
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


class InternVL2Captioner:
    """InternVL2 from a local checkpoint with its own modeling code (``trust_remote_code``,
    never fetched). One 448x448 tile per image (InternVL's ImageNet normalisation), the
    model's ``batch_chat``. Not exercised by the tests: no InternVL2 code ships offline."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, model: str, device: str = "cpu", dtype: str = "bfloat16", instruction: str = DEFAULT_INSTRUCTION,
                 max_new_tokens: int = 80, tile: int = 448):
        from transformers import AutoModel, AutoTokenizer

        p = _local(model)
        self.tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=True, use_fast=False)
        self.model = AutoModel.from_pretrained(p, local_files_only=True, trust_remote_code=True,
                                               dtype=_torch_dtype(dtype)).to(device).eval()
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


BACKENDS = {"blip2": Blip2Captioner, "chat_vlm": ChatVLMCaptioner, "internvl2": InternVL2Captioner}
