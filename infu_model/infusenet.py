"""InfuseNet: a diffusers ``FluxControlNetModel`` used the InfU way.

It reads the noisy image tokens plus the control latent (through the
zero-initialised ``controlnet_x_embedder``; no hint block), attends to the 8
identity tokens as its "text" (``txt_ids`` zeros), and emits one residual per
block; the base transformer adds them with diffusers' default interval mapping
(double block k takes residual ``k // ceil(19/4)``, single block k
``k // ceil(38/10)``), on image tokens only.
"""
from __future__ import annotations

import inspect
import math

import torch
from diffusers import FluxControlNetModel


def infusenet_depth(base_double: int, base_single: int, factor: int = 4) -> tuple[int, int]:
    """Blocks for InfuseNet with multiplication factor i (M = N * i): FLUX's 19 + 38
    blocks give the published 4 double + 10 single blocks."""
    return max(1, base_double // factor), max(1, math.ceil(base_single / factor))


def build_infusenet(transformer, factor: int = 4, copy_weights: bool = True) -> FluxControlNetModel:
    """A fresh InfuseNet from a base ``FluxTransformer2DModel`` (the paper's i = 4)."""
    cfg = transformer.config
    n_double, n_single = infusenet_depth(cfg.num_layers, cfg.num_single_layers, factor)
    net = FluxControlNetModel.from_transformer(
        transformer, num_layers=n_double, num_single_layers=n_single,
        attention_head_dim=cfg.attention_head_dim, num_attention_heads=cfg.num_attention_heads,
        load_weights_from_transformer=copy_weights)
    # from_transformer keeps the base's own config keys (out_channels, where it was loaded from), which every
    # later load of the saved InfuseNet reports as unexpected: the same tensors, under the keys it accepts
    accepted = inspect.signature(FluxControlNetModel.__init__).parameters
    with torch.device("meta"):
        clean = FluxControlNetModel.from_config({k: v for k, v in net.config.items() if k in accepted})
    clean.load_state_dict(net.state_dict(), strict=True, assign=True)
    return clean


def residual_index(block: int, n_base: int, n_residuals: int) -> int:
    """Which InfuseNet residual the base block ``block`` receives (diffusers' interval mapping)."""
    return block // math.ceil(n_base / n_residuals)


def in_window(step: int, num_steps: int, start: float, end: float) -> bool:
    """Whether step ``step`` of ``num_steps`` is inside the [start, end] guidance window
    (diffusers' ControlNet rule: off when i/N < start or (i+1)/N > end)."""
    return not (step / num_steps < start or (step + 1) / num_steps > end)


def infusenet_residuals(infusenet: FluxControlNetModel, *, latents: torch.Tensor, control: torch.Tensor,
                        id_tokens: torch.Tensor, pooled: torch.Tensor, timestep: torch.Tensor,
                        img_ids: torch.Tensor, scale: float, guidance: torch.Tensor | None):
    """One InfuseNet forward, returning (double, single) residual lists multiplied by ``scale``."""
    txt_ids = torch.zeros(id_tokens.shape[1], 3, device=id_tokens.device, dtype=id_tokens.dtype)
    double, single = infusenet(
        hidden_states=latents, controlnet_cond=control, conditioning_scale=scale, encoder_hidden_states=id_tokens,
        pooled_projections=pooled, timestep=timestep, img_ids=img_ids, txt_ids=txt_ids,
        guidance=guidance if infusenet.config.guidance_embeds else None, return_dict=False)
    return double, single
