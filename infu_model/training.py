"""The InfU training objective (paper §3.3, §4.1): conditional flow matching on the
rectified-flow path with the base model frozen.

``z_t = (1 - t) * x0 + t * eps``, the model predicts ``eps - x0``; ``t`` comes from
a logit-normal density (mean 0, std 1: SD3's "rf/lognorm(0.00, 1.00)"), through
diffusers' own training utility. Trainable: InfuseNet + projection network; the
FLUX transformer (and VAE, text encoders, upstream) stays frozen. This module is
the step; data loading, Ray Train and checkpoints build on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling

from infu_model.infusenet import infusenet_residuals


@dataclass
class FlowBatch:
    latents: torch.Tensor          # packed clean latents x0 [B, N, C]
    control: torch.Tensor          # packed control latents [B, N, C]
    id_embedding: torch.Tensor     # [B, D] identity embeddings of the *source* images
    prompt_embeds: torch.Tensor    # T5 [B, L, joint_dim]
    pooled: torch.Tensor           # CLIP pooled [B, pooled_dim]
    text_ids: torch.Tensor         # [L, 3]
    img_ids: torch.Tensor          # [N, 3]


def sample_t(batch: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0,
             device="cpu") -> torch.Tensor:
    """Logit-normal timesteps in (0, 1)."""
    return compute_density_for_timestep_sampling("logit_normal", batch, logit_mean=mean, logit_std=std,
                                                 device=device, generator=generator)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


def flow_matching_loss(transformer, infusenet, image_proj, batch: FlowBatch, *, guidance_scale: float = 1.0,
                       generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity ``eps - x0``."""
    x0 = batch.latents
    b = x0.shape[0]
    if t is None:
        t = sample_t(b, generator).to(x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    tt = t.to(x0.dtype).view(b, 1, 1)
    z_t = (1 - tt) * x0 + tt * noise
    id_tokens = image_proj(batch.id_embedding).to(x0.dtype)
    double, single = infusenet_residuals(
        infusenet, latents=z_t, control=batch.control, id_tokens=id_tokens, pooled=batch.pooled,
        timestep=t.to(x0.dtype), img_ids=batch.img_ids, scale=1.0, guidance=torch.ones(b, device=x0.device))
    guidance = (torch.full([b], guidance_scale, device=x0.device, dtype=torch.float32)
                if transformer.config.guidance_embeds else None)
    pred = transformer(hidden_states=z_t, timestep=t.to(x0.dtype), guidance=guidance,
                       pooled_projections=batch.pooled, encoder_hidden_states=batch.prompt_embeds,
                       txt_ids=batch.text_ids, img_ids=batch.img_ids, controlnet_block_samples=double,
                       controlnet_single_block_samples=single, return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())


def adamw(params, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """The paper's optimiser: AdamW, betas (0.9, 0.999), weight decay 0.01."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
