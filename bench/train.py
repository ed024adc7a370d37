"""Train-step cost and memory of InfuseNet + projection (forward and backward through the
frozen base, gradient clipping, optimizer step) with each memory option, against a
forward-only base step.

Every mode runs the real step (``infu_model.training``: ``InfUTrainable``,
``flow_matching_loss`` with autocast to the base's dtype, ``make_optimizer``) on one
sample with the text encoders' outputs given (as with the encoder cache: T5 is not on the
device). Modes: optimizer ``adamw`` (fp32 states) or ``adamw_8bit`` (bitsandbytes) x
gradient checkpointing of InfuseNet only or of InfuseNet and the frozen base.

CPU mode (default): a narrow FLUX with FLUX's real depth (19 + 38 blocks) and its
4 + 10-block InfuseNet, float32, 256x256; prints s/step, ratio and peak RSS.
--full-size (GPU): real-size random weights (bf16 base, fp32 trainables), 1024x1024;
prints s/step, samples/s and peak GPU memory per mode. Random full-size weights overflow
to a NaN loss after a step or two: the timing and memory do not depend on the values.

    python bench/train.py [--full-size] [--steps 5] [--modes adamw:infusenet adamw_8bit:all ...]
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from infer import models  # noqa: E402
from infu_model.projection import ProjectionNetwork  # noqa: E402
from infu_model.training import (FlowBatch, InfUTrainable, enable_gradient_checkpointing, flow_matching_loss,  # noqa: E402
                                 freeze, make_optimizer)

MODES = ["adamw:infusenet", "adamw:all", "adamw_8bit:infusenet", "adamw_8bit:all"]


def make_batch(side: int, cfg: dict, device, dtype) -> FlowBatch:
    n, g = (side // 16) ** 2, side // 16
    ids = torch.zeros(n, 3, device=device)
    ids[:, 1], ids[:, 2] = torch.arange(n, device=device) // g, torch.arange(n, device=device) % g
    return FlowBatch(latents=torch.randn(1, n, 64, device=device, dtype=dtype),
                     control=torch.zeros(1, n, 64, device=device, dtype=dtype),
                     id_embedding=torch.randn(1, 512, device=device),
                     prompt_embeds=torch.randn(1, 512, cfg["joint_attention_dim"], device=device, dtype=dtype),
                     pooled=torch.randn(1, cfg["pooled_projection_dim"], device=device, dtype=dtype),
                     text_ids=torch.zeros(512, 3, device=device), img_ids=ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", action="store_true", help="real-size random weights on the GPU, 1024x1024")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode (after one warm-up step)")
    ap.add_argument("--modes", nargs="+", default=MODES, help="OPTIMIZER:CHECKPOINTING, checkpointing infusenet|all")
    args = ap.parse_args()
    full = args.full_size
    device, dtype, side = ("cuda", torch.bfloat16, 1024) if full else ("cpu", torch.float32, 256)
    torch.manual_seed(0)
    base, net, cfg = models(full, device, dtype, trainable_dtype=torch.float32)
    freeze(base)
    proj = ProjectionNetwork(output_dim=cfg["joint_attention_dim"]).to(device)
    trainable = InfUTrainable(net, proj).train()
    batch = make_batch(side, cfg, device, dtype)
    t, noise = torch.full([1], 0.5, device=device), torch.randn_like(batch.latents, dtype=torch.float32)

    def sync():
        if full:
            torch.cuda.synchronize()

    def timed(fn):
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        sync()
        return (time.perf_counter() - start) / args.steps

    @torch.no_grad()
    def base_forward():
        base(hidden_states=batch.latents, timestep=t.to(dtype), guidance=torch.full([1], 3.5, device=device),
             pooled_projections=batch.pooled, encoder_hidden_states=batch.prompt_embeds, txt_ids=batch.text_ids,
             img_ids=batch.img_ids, return_dict=False)

    t_fwd = timed(base_forward)
    print(f"{'full-size: bf16 base, fp32 InfuseNet + projection' if full else 'CPU, FLUX depth (19+38), width 64'}; "
          f"{side}x{side}, 1 sample, {args.steps} timed steps")
    print(f"{'mode':<56}{'s/step':>8}{'ratio':>7}{'samples/s':>11}{'peak GiB' if full else 'peak RSS MiB':>14}")
    print(f"{'base forward only (no grad)':<56}{t_fwd:>8.3f}{1:>7.2f}{1 / t_fwd:>11.2f}{'':>14}")
    for mode in args.modes:
        opt_name, ckpt = mode.split(":")
        enable_gradient_checkpointing(net)
        if ckpt == "all":
            enable_gradient_checkpointing(base)
        else:
            base.disable_gradient_checkpointing()
        try:
            opt = make_optimizer([p for p in trainable.parameters()], opt_name, 1e-5)
        except ImportError as e:
            print(f"{mode:<56} skipped: {e}")
            continue

        def step(opt=opt):
            loss = flow_matching_loss(base, trainable, batch, t=t, noise=noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        if full:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            s = timed(step)
        except torch.OutOfMemoryError:
            print(f"{mode:<56} out of GPU memory")
            s = None
        if s is not None:
            peak = (f"{torch.cuda.max_memory_allocated() / 2**30:>14.1f}" if full
                    else f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:>14.0f}")
            label = f"train step, {opt_name}, checkpointing {'InfuseNet + base' if ckpt == 'all' else 'InfuseNet'}"
            print(f"{label:<56}{s:>8.3f}{s / t_fwd:>7.2f}{1 / s:>11.2f}{peak}")
        del opt
        trainable.zero_grad(set_to_none=True)
        gc.collect()


if __name__ == "__main__":
    main()
