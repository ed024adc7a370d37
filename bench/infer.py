"""End-to-end InfU inference: s/image, peak memory and the image per mode, next to plain FluxPipeline.

Builds the real ``InfUPipeline`` from random weights (speed and memory do not depend on the
values): --full-size = FLUX.1-dev's and InfU v1.0's shapes (T5-XXL, CLIP-L, FLUX VAE, the 12 B
transformer, the 4 + 10-block InfuseNet, the 1280-wide projection) in bf16 on the GPU at
864x1152, 30 steps; the default is FLUX's depth (19 + 38 blocks) at a narrow width, float32, on
the CPU at 256x256. Every mode generates the same prompt, identity embedding and seed (one warm-up
call of 2 steps first, which also compiles) and is compared with the eager image:

  eager         InfUPipeline, InfuseNet window [0, 1] (the reference: the official pipeline's speed)
  flux          plain FluxPipeline on the same components (no identity)
  window        window [0, 0.5]: InfuseNet skipped in the second half
  text_offload  T5 + CLIP in CPU memory, streamed block by block to the GPU to encode
  compile_text_offload        + regional torch.compile of the FLUX blocks (compile time = warm-up)
  fused_compile_text_offload  + fused QKV projections (recompiles)
  low_vram      diffusers' group offloading of every model, block by block with CUDA streams
                (modes build on each other in the order given; low_vram goes last or alone)

    python bench/infer.py [--full-size] [--steps 30] [--modes eager compile ...]

--memory-modes full 24gb 16gb low_vram ... measures the memory modes of infu_model/memory.py instead,
each on a fresh pipeline of the same random weights: s/image beside full's and the official's
(--official-s, 6.62 s on an H200 at full size), peak GiB, SPMS pairs per GPU-hour (one image per pair)
and the image's difference from full's; --fp32-scale first puts that difference in scale: the same
weights in float32 and in bf16 (needs about 2x full's memory).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline,  # noqa: E402
                       FluxTransformer2DModel)

from infu_model.infusenet import build_infusenet  # noqa: E402
from infu_model.memory import PLANS  # noqa: E402
from infu_model.pipeline import InfUPipeline  # noqa: E402
from infu_model.projection import ProjectionNetwork  # noqa: E402
from infu_model.tiny import clip_tokenizer, t5_tokenizer  # noqa: E402

FULL = dict(transformer=dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                             joint_attention_dim=4096, pooled_projection_dim=768, in_channels=64,
                             guidance_embeds=True, axes_dims_rope=[16, 56, 56]),
            t5=dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24),
            clip=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
            vae=[128, 256, 512, 512], projection={})
NARROW = dict(transformer=dict(num_layers=19, num_single_layers=38, attention_head_dim=16, num_attention_heads=4,
                               joint_attention_dim=64, pooled_projection_dim=64, in_channels=64,
                               guidance_embeds=True, axes_dims_rope=[4, 6, 6]),
              t5=dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2),
              clip=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2),
              vae=[32, 32, 64, 64], projection=dict(dim=64, depth=2, dim_head=16, heads=4))
MODES = ["eager", "flux", "window", "text_offload", "compile_text_offload", "fused_compile_text_offload"]


def models(full: bool, device, dtype, trainable_dtype=None):
    """(base transformer, InfuseNet, config): random weights built directly on ``device`` in their
    dtypes (``trainable_dtype`` for InfuseNet, default ``dtype``), never a float32 copy of the base."""
    cfg = (FULL if full else NARROW)["transformer"]
    with torch.device(device), default_dtype(dtype):
        base = FluxTransformer2DModel(**cfg).eval()
    with torch.device(device), default_dtype(trainable_dtype or dtype):
        net = build_infusenet(base, copy_weights=False).eval()
    return base, net, cfg


class default_dtype:
    def __init__(self, dtype):
        self.dtype, self.saved = dtype, torch.get_default_dtype()

    def __enter__(self):
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved)


def build(full: bool, device, dtype) -> InfUPipeline:
    """An InfUPipeline of random weights at FLUX.1-dev + InfU v1.0 sizes (or the narrow CPU sizes)."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    size = FULL if full else NARROW
    torch.manual_seed(0)
    transformer, infusenet, cfg = models(full, device, dtype)
    clip_tok, clip_vocab = clip_tokenizer()
    t5_tok, t5_vocab = t5_tokenizer()
    with torch.device(device), default_dtype(dtype):
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=size["vae"],
                            layers_per_block=2, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                            use_quant_conv=False, use_post_quant_conv=False)
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=max(clip_vocab, 49408), max_position_embeddings=77,
                                            projection_dim=cfg["pooled_projection_dim"], bos_token_id=0,
                                            eos_token_id=1, pad_token_id=1, **size["clip"]))
        t5 = T5EncoderModel(T5Config(vocab_size=max(t5_vocab, 32128), feed_forward_proj="gated-gelu",
                                     relative_attention_num_buckets=32, decoder_start_token_id=0, **size["t5"]))
        proj = ProjectionNetwork(output_dim=cfg["joint_attention_dim"], **size["projection"])
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return InfUPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=clip.eval(), tokenizer=clip_tok,
                        text_encoder_2=t5.eval(), tokenizer_2=t5_tok, transformer=transformer,
                        infusenet=infusenet, image_proj=proj.eval())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", action="store_true", help="FLUX.1-dev + InfU v1.0 shapes, bf16, on the GPU")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES + ["low_vram"])
    ap.add_argument("--memory-modes", nargs="+", choices=list(PLANS), help="measure these memory modes instead")
    ap.add_argument("--official-s", type=float, default=6.62, help="the official pipeline's s/image to compare with")
    ap.add_argument("--fp32-scale", action="store_true", help="also the same weights in fp32 vs bf16")
    args = ap.parse_args()
    if args.memory_modes:
        return memory_modes(args)
    full = args.full_size
    device, dtype = ("cuda", torch.bfloat16) if full else ("cpu", torch.float32)
    w, h = (args.width or (864 if full else 256)), (args.height or (1152 if full else 256))
    pipe = build(full, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    emb = torch.randn(1, pipe.image_proj.config.embedding_dim, generator=torch.Generator().manual_seed(1))
    call = dict(prompt="a portrait photo of a person in a red coat, film grain", width=w, height=h, seed=7,
                id_embedding=emb, output_type="np")
    gpu = device == "cuda"

    flux = FluxPipeline(**{k: v for k, v in pipe.components.items() if k not in ("infusenet", "image_proj")})
    flux.set_progress_bar_config(disable=True)
    steps = {
        "flux": lambda **k: flux(prompt=call["prompt"], width=w, height=h, output_type="np", max_sequence_length=512,
                                 generator=torch.Generator().manual_seed(7), **k).images,
        "eager": lambda **k: pipe(**call, **k).images,
        "window": lambda **k: pipe(**call, infusenet_guidance_end=0.5, **k).images,
    }
    # each mode builds on the state the previous one left (memory modes are set once per pipeline)
    setups = {"text_offload": lambda: pipe.set_memory(device, text_encoders="offload"),
              "compile_text_offload": lambda: pipe.compile_blocks(fuse_qkv=False),
              "fused_compile_text_offload": lambda: pipe.compile_blocks(fuse_qkv=True),
              "low_vram": lambda: pipe.set_memory(device, offload="low_vram")}
    name = torch.cuda.get_device_name() if gpu else "CPU"
    import diffusers

    print(f"{name}; {'full-size bf16' if full else 'narrow fp32, FLUX depth'}; {w}x{h}, {args.steps} steps; "
          f"torch {torch.__version__}, diffusers {diffusers.__version__}")
    print(f"{'mode':<22}{'s/image':>9}{'vs eager':>10}{'warm-up s':>11}{'peak GiB':>10}   image vs eager")
    ref, ref_s = None, None
    for mode in args.modes:
        try:
            if mode in setups:
                setups[mode]()
            img, s, warm, peak = timed(steps.get(mode, steps["eager"]), gpu, args.steps)
        except Exception as e:  # noqa: BLE001 - report the mode and go on with the others
            print(f"{mode:<22} FAILED: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        if mode == "eager":
            ref, ref_s = img, s
        same = "—" if ref is None or mode in ("flux", "window", "eager") else difference(img, ref)
        ratio = f"{ref_s / s:.2f}x" if ref_s else "—"
        print(f"{mode:<22}{s:>9.2f}{ratio:>10}{warm:>11.1f}{peak:>10.1f}   {same}", flush=True)


def timed(fn, gpu: bool, steps: int):
    """(image, s, warm-up s, peak GiB): a 2-step warm-up (compiles), then ``steps``."""
    def run(n):
        if gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(num_inference_steps=n)
        if gpu:
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _, warm = run(2)
    img, s = run(steps)
    return img, s, warm, (torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan"))


def difference(img, ref) -> str:
    d = np.abs(img.astype(np.float64) - ref)
    return "identical" if not d.any() else f"max {d.max():.2e}, mean {d.mean():.2e} (image std {ref.std():.3f})"


def memory_modes(args) -> None:
    """Each memory mode on a fresh pipeline of the same random weights (seed 0), full's image the reference."""
    import gc

    full = args.full_size
    device, dtype = ("cuda", torch.bfloat16) if full else ("cpu", torch.float32)
    gpu = device == "cuda"
    w, h = (args.width or (864 if full else 256)), (args.height or (1152 if full else 256))
    emb = torch.randn(1, 512, generator=torch.Generator().manual_seed(1))  # cut to the projection's input
    call = dict(prompt="a portrait photo of a person in a red coat, film grain", width=w, height=h, seed=7,
                output_type="np")
    name = torch.cuda.get_device_name() if gpu else "CPU"
    print(f"{name}; {'full-size bf16' if full else 'narrow fp32, FLUX depth'}; {w}x{h}, {args.steps} steps; "
          f"official {args.official_s:.2f} s/image")
    if args.fp32_scale:
        pipe = build(full, device, torch.float32)
        pipe.set_progress_bar_config(disable=True)
        emb = emb[:, :pipe.image_proj.config.embedding_dim]
        f32 = pipe(**call, id_embedding=emb, num_inference_steps=args.steps).images
        pipe.to(torch.bfloat16)
        b16 = pipe(**call, id_embedding=emb, num_inference_steps=args.steps).images
        print(f"scale: bf16 vs fp32 on the same weights: {difference(b16, f32)}", flush=True)
        del pipe
        gc.collect()
    print(f"{'memory mode':<30}{'s/image':>9}{'vs full':>9}{'vs official':>13}{'peak GiB':>10}{'pairs/GPU-h':>13}"
          "   image vs full")
    ref, ref_s = None, None
    for mode in ["full"] + [m for m in args.memory_modes if m != "full"]:
        pipe = None
        try:
            pipe = build(full, device, dtype).use_memory_plan(PLANS[mode], device)
            pipe.set_progress_bar_config(disable=True)
            e = emb[:, :pipe.image_proj.config.embedding_dim]
            img, s, warm, peak = timed(lambda **k: pipe(**call, id_embedding=e, **k).images, gpu, args.steps)
        except Exception as ex:  # noqa: BLE001 - report the mode and go on with the others
            print(f"{mode:<30} FAILED: {type(ex).__name__}: {str(ex)[:300]}", flush=True)
            continue
        finally:
            pipe = None  # the next mode starts from an empty GPU
            gc.collect()
            if gpu:
                torch.cuda.empty_cache()
        if ref is None:
            ref, ref_s = img, s
        same = "—" if mode == "full" else difference(img, ref)
        print(f"{mode:<30}{s:>9.2f}{ref_s / s:>8.2f}x{args.official_s / s:>12.2f}x{peak:>10.1f}{3600 / s:>13.0f}"
              f"   {same}", flush=True)


if __name__ == "__main__":
    main()
