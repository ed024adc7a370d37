"""InfU's projection network: a Perceiver resampler (IP-Adapter style) turning one
ID embedding [B, 1, 512] into 8 identity tokens [B, 8, 4096] for InfuseNet.

Parameter names match the published ``image_proj_model.bin`` (key ``image_proj``)
exactly, so that file loads with ``strict=True``; our own checkpoints are the
usual diffusers folder (``config.json`` + safetensors).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

CONFIG_BESIDE_BIN = "image_proj_config.json"  # ours; the published release has none (its values are the defaults)

def feed_forward(dim: int, mult: int) -> nn.Sequential:
    # indices 0..3 are the published layout: LayerNorm, Linear, GELU, Linear
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.dim_head, self.heads = dim_head, heads
        inner = dim_head * heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x, latents = self.norm1(x), self.norm2(latents)
        b, n, _ = latents.shape
        q = self._heads(self.to_q(latents))
        k, v = (self._heads(t) for t in self.to_kv(torch.cat([x, latents], dim=-2)).chunk(2, dim=-1))
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))  # on q and k each: more stable in fp16 than 1/sqrt(d) after
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class ProjectionNetwork(ModelMixin, ConfigMixin):
    """Defaults are InfU v1.0's published hyper-parameters."""

    @register_to_config
    def __init__(self, dim: int = 1280, depth: int = 4, dim_head: int = 64, heads: int = 20,
                 num_queries: int = 8, embedding_dim: int = 512, output_dim: int = 4096, ff_mult: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), feed_forward(dim, ff_mult)]) for _ in range(depth))

    def forward(self, id_embedding: torch.Tensor) -> torch.Tensor:
        """[B, 512] or [B, 1, 512] -> [B, num_queries, output_dim]."""
        x = id_embedding if id_embedding.ndim == 3 else id_embedding.unsqueeze(1)
        x = self.proj_in(x.to(self.proj_in.weight.dtype))
        latents = self.latents.expand(x.shape[0], -1, -1)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))

    @classmethod
    def from_infu_bin(cls, path: str | Path, **config) -> "ProjectionNetwork":
        """The published ``image_proj_model.bin``: a torch pickle whose ``image_proj`` is the state dict.

        Sizes are read off the tensors; the head count (which shapes cannot tell) is the
        published 20 unless ``image_proj_config.json`` beside the file says otherwise.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"projection weights not found: {path}")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob["image_proj"] if isinstance(blob, dict) and "image_proj" in blob else blob
        side = path.with_name(CONFIG_BESIDE_BIN)
        if side.is_file():
            config = {**json.loads(side.read_text()), **config}
        config = {**_shape_config(state, config.get("heads", 20)), **config}
        model = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} does not match the projection network: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        return model.eval()

    def save_infu_bin(self, path: str | Path) -> None:
        """Write the published format (used by ``--export-published``), plus our small config beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"image_proj": self.state_dict()}, path)
        sizes = {k: v for k, v in self.config.items() if not k.startswith("_")}  # (not where it was loaded from)
        path.with_name(CONFIG_BESIDE_BIN).write_text(json.dumps(sizes, indent=1))


def _shape_config(state: dict, heads: int) -> dict:
    try:
        dim = state["latents"].shape[2]
        depth = len({k.split(".")[1] for k in state if k.startswith("layers.")})
        return {"dim": dim, "num_queries": state["latents"].shape[1], "embedding_dim": state["proj_in.weight"].shape[1],
                "output_dim": state["proj_out.weight"].shape[0], "depth": depth, "heads": heads,
                "dim_head": state["layers.0.0.to_q.weight"].shape[0] // heads,
                "ff_mult": state["layers.0.1.1.weight"].shape[0] // dim}
    except (KeyError, IndexError) as e:
        raise ValueError(f"not an InfU projection state dict (missing {e})") from None
