"""InfU weights as the files ByteDance's own ComfyUI node loads (github bytedance/ComfyUI_InfiniteYou).

Its loaders read ``ComfyUI/models/infinite_you/<variant>/``:

- ``infusenet_<sim|aes>_bf16.safetensors`` and ``infusenet_<sim|aes>_fp8e4m3fn.safetensors`` (the node
  lists both; FP8 for 24 GB cards): InfuseNet, a diffusers ``FluxControlNetModel`` state dict in one
  file under diffusers' key names, which ComfyUI converts itself (``controlnet_x_embedder`` becomes its
  ``pos_embed_input``, the blocks its ``double_blocks`` / ``single_blocks``);
- ``image_proj_model.bin``: a torch file holding ``{'image_proj': state_dict}``, loaded into the
  published resampler (1280 wide, 4 layers, 20 heads, 8 or 16 tokens, 512 -> 4096).

The node builds FLUX.1-dev-sized modules from those files, so weights of any other size (the tiny test
model) export fine but load only in code that reads the sizes off the tensors, as ours does.
"""
from __future__ import annotations

from pathlib import Path

import torch

SHORT = {"sim_stage1": "sim", "aes_stage2": "aes"}   # the node's file names for the published variants
FP8 = torch.float8_e4m3fn
# InfuseNet and projection as InfU v1.0 publishes them for FLUX.1-dev (what the node builds)
FULL_SIZE = {"infusenet": {"num_layers": 4, "num_single_layers": 10, "num_attention_heads": 24,
                           "attention_head_dim": 128, "in_channels": 64, "joint_attention_dim": 4096,
                           "pooled_projection_dim": 768},
             "projection": {"dim": 1280, "depth": 4, "heads": 20, "num_queries": 8, "embedding_dim": 512,
                            "output_dim": 4096}}


def file_names(variant: str) -> dict[str, str]:
    """{part: file name} the node looks for in ``<variant>/`` (a variant of our own is named as given)."""
    tag = SHORT.get(variant, variant)
    return {"bf16": f"infusenet_{tag}_bf16.safetensors", "fp8": f"infusenet_{tag}_fp8e4m3fn.safetensors",
            "projection": "image_proj_model.bin"}


def to_fp8(t: torch.Tensor) -> torch.Tensor:
    """A bf16 weight rounded to e4m3fn (saturated at its largest finite value: the format has no inf)."""
    top = torch.finfo(FP8).max
    return t.clamp(-top, top).to(FP8)


def export_comfyui(infusenet, proj, out: str | Path, variant: str, fp8: bool = True) -> list[Path]:
    """Write ``out/<variant>/`` as the node reads it: InfuseNet in bf16 (and FP8: matrices rounded to
    e4m3fn, vectors such as biases and norms kept in bf16), the projection's state dict under
    ``image_proj``. Returns the files written."""
    d = Path(out) / variant
    d.mkdir(parents=True, exist_ok=True)
    names = file_names(variant)
    from safetensors.torch import save_file

    bf16 = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in infusenet.state_dict().items()}
    written = [d / names["bf16"]]
    save_file(bf16, written[0], metadata={"format": "pt"})
    if fp8:
        small = {k: to_fp8(v) if v.is_floating_point() and v.ndim >= 2 else v for k, v in bf16.items()}
        written.append(d / names["fp8"])
        save_file(small, written[-1], metadata={"format": "pt"})
    state = {k: v.detach().to("cpu").contiguous() for k, v in proj.state_dict().items()}
    written.append(d / names["projection"])
    torch.save({"image_proj": state}, written[-1])
    return written


def size_differences(infusenet, proj) -> list[str]:
    """How ``infusenet`` and ``proj`` differ from the sizes the node builds ([] at FLUX.1-dev's size)."""
    have = {"infusenet": dict(infusenet.config), "projection": dict(proj.config)}
    return [f"{part}.{k} {have[part].get(k)} (the node builds {v})" for part, want in FULL_SIZE.items()
            for k, v in want.items() if have[part].get(k) != v]
