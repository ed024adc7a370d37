"""CLIP-family scorers named by model references: CLIPScore, PickScore and an aesthetic head.

All three are a ``transformers`` ``CLIPModel`` in its saved layout; scores are
plain cosines between L2-normalised image and text embeddings (the scale of the
InfU paper's Table 1: CLIPScore 0.318, PickScore 0.221 = PickScore's logit
divided by its logit scale of 100). The aesthetic head is the LAION
improved-aesthetic-predictor layout: a stack of ``layers.N`` linear layers (no
activations) over the normalised CLIP ViT-L/14 image embedding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from infu_model.hub import FILE, FOLDER, ModelError, resolve
from infu_model.runtime import torch_device


class ScorerMissing(FileNotFoundError):
    """A scorer's weights are not at the configured path."""


def _folder(path, what: str, markers: tuple[str, ...] = ("config.json",)) -> Path:
    if not path:
        raise ScorerMissing(f"{what}: no model configured")
    try:
        p = resolve(path, FOLDER)
    except ModelError as e:
        raise ScorerMissing(f"{what}: {e}") from None
    if not any((p / m).is_file() for m in markers):
        raise ScorerMissing(f"{what} not found: {path} (a transformers folder with {' or '.join(markers)})")
    return p


class ClipEmbedder:
    """Normalised image and text embeddings of one CLIP model (``processor``: where its
    tokenizer/image processor live when not beside the weights, as for PickScore)."""

    def __init__(self, model, processor=None, device: str = "cpu", dtype: str = "float32", what: str = "CLIP model"):
        from transformers import CLIPModel, CLIPProcessor

        path = _folder(model, what)
        proc = _folder(processor, f"{what} processor",
                                                ("preprocessor_config.json", "processor_config.json")) if processor else path
        self.device = device = torch_device(device)
        self.model = CLIPModel.from_pretrained(path, local_files_only=True,
                                               dtype=getattr(torch, dtype)).eval().to(device)
        self.processor = CLIPProcessor.from_pretrained(proc, local_files_only=True)

    @torch.no_grad()
    def images(self, images) -> np.ndarray:
        x = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        e = self.model.get_image_features(pixel_values=x.to(self.device, self.model.dtype))
        e = getattr(e, "pooler_output", e)
        return torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> np.ndarray:
        max_len = self.model.config.text_config.max_position_embeddings
        tok = self.processor.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len,
                                       return_tensors="pt")
        e = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                         attention_mask=tok["attention_mask"].to(self.device))
        e = getattr(e, "pooler_output", e)
        return torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy()

    def cosine(self, images, texts: list[str]) -> np.ndarray:
        """cos(image_i, text_i) for each pair."""
        return np.sum(self.images(images) * self.texts(texts), axis=1)


class AestheticScorer:
    """LAION-style aesthetic score (about 1-10) of each image."""

    def __init__(self, clip, head, device: str = "cpu"):
        self.clip = ClipEmbedder(clip, device=device, what="aesthetic CLIP model")
        try:
            head = resolve(head, FILE)
        except ModelError as e:
            raise ScorerMissing(f"aesthetic head: {e}") from None
        if not head.is_file():
            raise ScorerMissing(f"aesthetic head not found: {head} (.pth or .safetensors with layers.N.weight/bias)")
        if head.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(head))
        else:
            state = torch.load(head, map_location="cpu", weights_only=True)
        idx = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.endswith(".weight")})
        if not idx:
            raise ValueError(f"{head}: no layers.N.weight tensors")
        self.layers = [(state[f"layers.{i}.weight"].float(), state[f"layers.{i}.bias"].float()) for i in idx]

    def __call__(self, images) -> np.ndarray:
        x = torch.from_numpy(self.clip.images(images))
        for w, b in self.layers:
            x = x @ w.T + b
        return x[:, 0].numpy()
