"""Train-step cost of InfuseNet + projection (forward and backward through the
frozen base) against a forward-only base step.

CPU mode (default): a narrow FLUX with FLUX's real depth (19 + 38 blocks) and its
4 + 10-block InfuseNet; prints s/step of both, the ratio, samples/s and peak RSS.
--full-size (GPU): real-size random bf16 weights, one 1024x1024 sample, gradient
checkpointing; prints s/step and peak GPU memory.

    python bench/train.py [--full-size]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from infer import models  # noqa: E402
from infu_model.projection import ProjectionNetwork  # noqa: E402
from infu_model.training import FlowBatch, adamw, flow_matching_loss, freeze  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    full = args.full_size
    device, dtype = ("cuda", torch.bfloat16) if full else ("cpu", torch.float32)
    side = 1024 if full else 256
    torch.manual_seed(0)
    base, net, cfg = models(full, device, dtype)
    freeze(base)
    net = net.float().train()
    if full:
        net.enable_gradient_checkpointing()
    proj = ProjectionNetwork(output_dim=cfg["joint_attention_dim"]).to(device).train()
    n = (side // 16) ** 2
    ids = torch.zeros(n, 3, device=device)
    ids[:, 1], ids[:, 2] = torch.arange(n, device=device) // (side // 16), torch.arange(n, device=device) % (side // 16)
    batch = FlowBatch(latents=torch.randn(1, n, 64, device=device, dtype=dtype), control=torch.zeros(1, n, 64, device=device, dtype=dtype),
                      id_embedding=torch.randn(1, 512, device=device),
                      prompt_embeds=torch.randn(1, 512, cfg["joint_attention_dim"], device=device, dtype=dtype),
                      pooled=torch.randn(1, cfg["pooled_projection_dim"], device=device, dtype=dtype),
                      text_ids=torch.zeros(512, 3, device=device), img_ids=ids)
    opt = adamw(list(net.parameters()) + list(proj.parameters()), 1e-5)

    def sync():
        if full:
            torch.cuda.synchronize()

    def train_step():
        loss = flow_matching_loss(base, net, proj, batch, guidance_scale=1.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def base_forward():
        base(hidden_states=batch.latents, timestep=torch.full([1], 0.5, device=device, dtype=dtype),
             guidance=torch.ones(1, device=device), pooled_projections=batch.pooled,
             encoder_hidden_states=batch.prompt_embeds, txt_ids=batch.text_ids, img_ids=ids, return_dict=False)

    def timed(fn):
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(args.steps):
            fn()
        sync()
        return (time.perf_counter() - t) / args.steps

    if full:
        torch.cuda.reset_peak_memory_stats()
    t_fwd = timed(base_forward)
    t_train = timed(train_step)
    print(f"{'full-size bf16 + grad checkpointing' if full else 'CPU, FLUX depth (19+38), width 64'}; "
          f"{side}x{side}, 1 sample")
    print(f"{'step':<46}{'s/step':>9}{'ratio':>8}")
    print(f"{'base forward only (no grad)':<46}{t_fwd:>9.3f}{1:>8.2f}")
    print(f"{'train step: InfuseNet+projection fwd/bwd + AdamW':<46}{t_train:>9.3f}{t_train / t_fwd:>8.2f}")
    print(f"samples/s: {1 / t_train:.2f}")
    if full:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    else:
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
