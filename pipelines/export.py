"""`infu export comfyui`: InfU weights the engine can load, as the files ByteDance's ComfyUI node loads
(infu_model/comfyui.py), into a folder of their own with a README saying where each goes."""
from __future__ import annotations

from pathlib import Path

from infu_model.comfyui import export_comfyui, file_names, size_differences
from infu_model.published import STAGE_VARIANT

README = """# InfU weights for ComfyUI

Files for ByteDance's InfiniteYou node (https://github.com/bytedance/ComfyUI_InfiniteYou), written by
`infu export comfyui` from {src}.

Copy (or link) each variant folder here into `ComfyUI/models/infinite_you/`:

{listing}

- "Load InfuseNet" lists `<variant>/infusenet_*_bf16.safetensors` (the FP8 `*_fp8e4m3fn` file is for
  24 GB cards: half the memory, its matrices rounded to e4m3fn).
- "ID Embedding Model Loader" lists `<variant>/image_proj_model.bin` (8 tokens).
- Beside them ComfyUI needs FLUX.1-dev: `flux1-dev.safetensors` in `models/diffusion_models/` (or
  `flux1-dev-fp8` with weight dtype fp8_e4m3fn on 24 GB), `clip_l.safetensors` and
  `t5xxl_fp16.safetensors` (or `t5xxl_fp8_e4m3fn`) in `models/text_encoders/`, `ae.safetensors` in
  `models/vae/`; the node fetches antelopev2 and ArcFace itself.

An example workflow in ComfyUI's API format: docs/comfyui/infu_api_workflow.json in the engine.
"""


def stage_variant(meta: dict, root: Path) -> str | None:
    """The published variant name weights of ours stand for: stage 1 is a ``sim`` model, stage 2 an
    ``aes`` one (from their ``infu.json``, else the training run's config beside ``final/``)."""
    stage = meta.get("stage")
    if stage is None and (root.parent / "config.yaml").is_file():
        import yaml

        stage = (yaml.safe_load((root.parent / "config.yaml").read_text()) or {}).get("stage")
    return STAGE_VARIANT.get(stage)


def check_folder(out: Path) -> None:
    """``out`` is new, empty, or holds only earlier exports (variant folders of the node's files and
    the README): anything else is refused before a byte is written."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder")
    for p in sorted(out.iterdir()) if out.is_dir() else ():
        ours = p.name == "README.md" or (p.is_dir() and {f.name for f in p.iterdir()} <= set(file_names(p.name).values()))
        if not ours:
            raise FileExistsError(f"{out} holds {p.name!r}, which `infu export comfyui` did not write: give it a new "
                                  "or empty folder (it writes only there or over its own earlier export)")


def export(src: str, out: str | Path, variant: str | None = None, fp8: bool = True, log=print) -> list[Path]:
    """The InfU weights ``src`` (a training output or its ``final/``, a published folder or variant,
    a Hub reference) written for the ComfyUI node into ``out/<variant>/``; ``variant`` names the
    published variant to read and the folder written (default: the weights' own)."""
    from infu_model.model_options import infu_folder
    from infu_model.pipeline import load_infu_weights

    out = Path(out)
    check_folder(out)
    if Path(src).is_dir() and (Path(src) / "final").is_dir():  # a training output: its final weights
        src = str(Path(src) / "final")
    infusenet, proj, meta = load_infu_weights(src, variant or "aes_stage2")
    root, _ = infu_folder(src, variant or "aes_stage2")
    name = variant or meta.get("variant") or stage_variant(meta, root)
    if name is None:
        raise ValueError(f"{src}: its weights do not say which stage trained them: name the variant with --variant "
                         "(sim_stage1 for a stage-1 model, aes_stage2 after SFT, or a name of yours)")
    files = export_comfyui(infusenet, proj, out, name, fp8)
    listing = "\n".join(f"    {f.relative_to(out)}" for f in sorted(out.glob("*/*")))  # (earlier exports too)
    (out / "README.md").write_text(README.format(src=src, listing=listing))
    differs = size_differences(infusenet, proj)
    if differs:
        log(f"note: not FLUX.1-dev's full size ({'; '.join(differs[:3])}{'; ...' if len(differs) > 3 else ''}): "
            "the ComfyUI node builds full-size modules and will not load these")
    log(f"wrote {len(files)} files to {out / name} for ComfyUI's InfiniteYou node (where each goes: "
        f"{out / 'README.md'})")
    return files
