"""Denoising-step cost of InfU against the base transformer alone.

CPU mode (default): a small-width FLUX with FLUX's real depth (19 double + 38
single blocks) and the InfuseNet built from it (4 + 10 blocks, i = 4); prints
the step time of base alone vs base + InfuseNet (target ratio <= 1.25), and the
time window skipping saves over the original's compute-and-multiply-by-zero.

--full-size (GPU): real-size FLUX.1-dev + InfuseNet with random bf16 weights
(speed does not depend on the values); prints s/image at 864x1152, 30 steps,
and peak GPU memory.

    python bench/infer.py [--steps 30] [--full-size]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from diffusers import FluxTransformer2DModel  # noqa: E402

from infu_model.infusenet import build_infusenet, in_window, infusenet_residuals  # noqa: E402


def models(full: bool, device, dtype, trainable_dtype=None):
    """(base transformer, InfuseNet, config): random weights built directly on ``device`` in their
    dtypes (``trainable_dtype`` for InfuseNet, default ``dtype``), never a float32 copy of the base."""
    if full:
        cfg = dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                   joint_attention_dim=4096, pooled_projection_dim=768, in_channels=64, guidance_embeds=True,
                   axes_dims_rope=[16, 56, 56])
    else:
        cfg = dict(num_layers=19, num_single_layers=38, attention_head_dim=16, num_attention_heads=4,
                   joint_attention_dim=64, pooled_projection_dim=64, in_channels=64, guidance_embeds=True,
                   axes_dims_rope=[4, 6, 6])
    default = torch.get_default_dtype()
    try:
        with torch.device(device):
            torch.set_default_dtype(dtype)
            base = FluxTransformer2DModel(**cfg).eval()
            torch.set_default_dtype(trainable_dtype or dtype)
            net = build_infusenet(base, copy_weights=False).eval()
    finally:
        torch.set_default_dtype(default)
    return base, net, cfg


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--full-size", action="store_true", help="real-size random weights, bf16, on the GPU")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    args = ap.parse_args()
    full = args.full_size
    device = "cuda" if full else "cpu"
    dtype = torch.bfloat16 if full else torch.float32
    w, h = (args.width or (864 if full else 256)), (args.height or (1152 if full else 256))
    torch.manual_seed(0)
    base, net, cfg = models(full, device, dtype)
    n_tok = (w // 16) * (h // 16)
    lat = torch.randn(1, n_tok, 64, device=device, dtype=dtype)
    ctrl = torch.randn_like(lat)
    ids = torch.zeros(n_tok, 3, device=device)
    ids[:, 1], ids[:, 2] = torch.arange(n_tok, device=device) // (w // 16), torch.arange(n_tok, device=device) % (w // 16)
    text = torch.randn(1, 512, cfg["joint_attention_dim"], device=device, dtype=dtype)
    id_tokens = torch.randn(1, 8, cfg["joint_attention_dim"], device=device, dtype=dtype)
    pooled = torch.randn(1, cfg["pooled_projection_dim"], device=device, dtype=dtype)
    txt_ids = torch.zeros(512, 3, device=device)
    g = torch.full([1], 3.5, device=device)
    t = torch.full([1], 0.5, device=device, dtype=dtype)

    def sync():
        if full:
            torch.cuda.synchronize()

    def step(use_infu: bool, scale: float = 1.0):
        d = s = None
        if use_infu:
            d, s = infusenet_residuals(net, latents=lat, control=ctrl, id_tokens=id_tokens, pooled=pooled,
                                       timestep=t, img_ids=ids, scale=scale, guidance=torch.ones(1, device=device))
        return base(hidden_states=lat, timestep=t, guidance=g, pooled_projections=pooled, encoder_hidden_states=text,
                    txt_ids=txt_ids, img_ids=ids, controlnet_block_samples=d, controlnet_single_block_samples=s,
                    return_dict=False)[0]

    def timed(fn, n):
        fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - t0) / n

    reps = 3 if full else 5
    if full:
        torch.cuda.reset_peak_memory_stats()
    t_base = timed(lambda: step(False), reps)
    t_infu = timed(lambda: step(True), reps)
    print(f"{'full-size bf16 on ' + torch.cuda.get_device_name() if full else 'CPU, FLUX depth (19+38), width 64'}; "
          f"{w}x{h} -> {n_tok} image tokens")
    print(f"{'step':<34}{'s/step':>9}{'ratio':>8}")
    print(f"{'base transformer alone':<34}{t_base:>9.4f}{1:>8.2f}")
    print(f"{'InfU (InfuseNet + base)':<34}{t_infu:>9.4f}{t_infu / t_base:>8.2f}")
    n = args.steps
    window = (0.0, 0.5)  # e.g. identity only in the first half
    keep = [in_window(i, n, *window) for i in range(n)]
    orig = n * t_infu  # the original runs InfuseNet on every step and multiplies by 0 outside the window
    ours = sum(t_infu if k else t_base for k in keep)
    print(f"\n{n} steps with InfuseNet window {window}: compute-and-zero {orig:.3f} s, skip {ours:.3f} s "
          f"({100 * (1 - ours / orig):.0f}% saved)")
    if full:
        print(f"s/image at {w}x{h}, {n} steps (denoiser only): {n * t_infu:.2f} s; "
              f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
