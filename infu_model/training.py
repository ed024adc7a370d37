"""The InfU training objective (paper §3.3, §4.1): conditional flow matching on the
rectified-flow path with the base model frozen.

``z_t = (1 - t) * x0 + t * eps``, the model predicts ``eps - x0``; ``t`` comes from
a logit-normal density (mean 0, std 1: SD3's "rf/lognorm(0.00, 1.00)"), through
diffusers' own training utility. Trainable: InfuseNet + projection network, held
together in one module (``InfUTrainable``) so DDP and FSDP see one model; the FLUX
transformer (and VAE, text encoders, upstream) stays frozen.

Mixed precision follows diffusers' FLUX ControlNet trainer: the frozen base keeps
its own dtype (bfloat16 on GPUs), the trainables keep float32 master weights, the
forward runs under autocast to the base's dtype and the residuals enter the base in
that dtype; the loss is taken in float32. With a float32 base nothing is cast and
the step is the plain float32 formulation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling
from torch.nn.attention import SDPBackend, sdpa_kernel

from infu_model.infusenet import infusenet_residuals

OPTIMIZERS = ("adamw", "adamw_8bit")
# cuDNN's fused attention backward fails on Hopper with torch 2.11 at FLUX's shapes (measured on an H200:
# "mha_graph.execute(...).is_good()" errors, illegal memory accesses, NaN gradients after one step).
# Training attention, and its recomputation under gradient checkpointing, uses the other kernels.
TRAINING_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class FlowBatch:
    latents: torch.Tensor          # packed clean latents x0 [B, N, C]
    control: torch.Tensor          # packed control latents [B, N, C]
    id_embedding: torch.Tensor     # [B, D] identity embeddings of the *source* images
    prompt_embeds: torch.Tensor    # T5 [B, L, joint_dim]
    pooled: torch.Tensor           # CLIP pooled [B, pooled_dim]
    text_ids: torch.Tensor         # [L, 3]
    img_ids: torch.Tensor          # [N, 3]
    weight: torch.Tensor | None = None  # [B] per-sample loss weight (0 for a stand-in of an unusable row)


class InfUTrainable(torch.nn.Module):
    """InfuseNet + projection network as one module: ID embedding -> 8 ID tokens -> residuals."""

    def __init__(self, infusenet, image_proj):
        super().__init__()
        self.infusenet, self.image_proj = infusenet, image_proj

    def forward(self, *, latents, control, id_embedding, pooled, timestep, img_ids, dtype):
        id_tokens = self.image_proj(id_embedding).to(dtype)
        b = latents.shape[0]
        double, single = infusenet_residuals(
            self.infusenet, latents=latents, control=control, id_tokens=id_tokens, pooled=pooled, timestep=timestep,
            img_ids=img_ids, scale=1.0, guidance=torch.ones(b, device=latents.device))
        # the base adds these to its hidden states: in its dtype, or a bf16 base would be promoted to float32
        return [r.to(dtype) for r in double], [r.to(dtype) for r in single]


def sample_t(batch: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0,
             device="cpu") -> torch.Tensor:
    """Logit-normal timesteps in (0, 1)."""
    return compute_density_for_timestep_sampling("logit_normal", batch, logit_mean=mean, logit_std=std,
                                                 device=device, generator=generator)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


def training_attention():
    return sdpa_kernel(TRAINING_ATTENTION)


def enable_gradient_checkpointing(model) -> None:
    """diffusers' block-wise checkpointing, recomputing under the training attention kernels."""
    def checkpoint(module, *args):
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False,
                                                 context_fn=lambda: (training_attention(), training_attention()))

    model.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint)


def check_train_dtype(dtype: torch.dtype) -> None:
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"training runs the frozen base in float32 or bfloat16, not {dtype}: float16 would need "
                         "loss scaling, bfloat16 does not")


def flow_matching_loss(transformer, trainable, batch: FlowBatch, *, guidance_scale: float = 3.5,
                       generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity ``eps - x0``: the mean over
    samples (weighted by ``batch.weight`` when given; all-zero weights give a zero loss that still
    runs forward and backward, so data-parallel ranks stay in step)."""
    x0 = batch.latents
    b, dtype = x0.shape[0], transformer.dtype
    if t is None:
        t = sample_t(b, generator).to(x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
    tt = t.float().view(b, 1, 1)
    z_t = ((1 - tt) * x0.float() + tt * noise.float()).to(dtype)
    timestep = t.to(dtype)
    guidance = (torch.full([b], guidance_scale, device=x0.device, dtype=torch.float32)
                if transformer.config.guidance_embeds else None)
    with torch.autocast(x0.device.type, dtype=dtype, enabled=dtype != torch.float32), training_attention():
        double, single = trainable(latents=z_t, control=batch.control.to(dtype), id_embedding=batch.id_embedding,
                                   pooled=batch.pooled, timestep=timestep, img_ids=batch.img_ids, dtype=dtype)
        pred = transformer(hidden_states=z_t, timestep=timestep, guidance=guidance, pooled_projections=batch.pooled,
                           encoder_hidden_states=batch.prompt_embeds, txt_ids=batch.text_ids, img_ids=batch.img_ids,
                           controlnet_block_samples=double, controlnet_single_block_samples=single,
                           return_dict=False)[0]
    target = noise.float() - x0.float()
    if batch.weight is None:
        return torch.nn.functional.mse_loss(pred.float(), target)
    per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2))
    w = batch.weight.to(per_sample)
    return (per_sample * w).sum() / w.sum().clamp(min=1)


def make_optimizer(params, name: str, lr: float, weight_decay: float = 0.01):
    """The paper's optimiser: AdamW, betas (0.9, 0.999), weight decay 0.01. ``adamw_8bit`` keeps
    the two moments in 8 bits (bitsandbytes' block-wise quantised AdamW: 6 of the 8 bytes per
    parameter saved), for fitting stage 1 on one 80 GB GPU."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    if name == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ImportError("train.optimizer: adamw_8bit needs bitsandbytes: pip install 'infu-engine[quant]'") from e
        return bnb.optim.AdamW8bit(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    raise ValueError(f"train.optimizer must be one of {list(OPTIMIZERS)}, not {name!r}")

