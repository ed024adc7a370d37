"""`infu export comfyui` (#47): the files ByteDance's ComfyUI InfiniteYou node loads, from the tiny InfU
in the published layout. ComfyUI is not installable from the registries, so the files are read back the
way the node reads them: InfuseNet's safetensors as a diffusers FluxControlNetModel state dict (the
node's loader converts diffusers keys itself), the projection file with torch.load into the published
resampler shape (``['image_proj']``, strict)."""
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from infu_model.comfyui import FP8, file_names
from infu_model.infusenet import infusenet_residuals
from infu_model.pipeline import load_infu_weights
from infu_model.projection import ProjectionNetwork
from pipelines.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from infu_model.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("comfy") / "export"
    r = CliRunner().invoke(main, ["export", "comfyui", str(tiny["infu"]), "--variant", "sim_stage1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, r.output


def residuals(net, proj):
    """InfuseNet's residuals for fixed inputs (in the network's dtype), the ID tokens from ``proj``."""
    g = torch.Generator().manual_seed(0)
    c = net.config
    dtype = next(net.parameters()).dtype
    latents = torch.randn(1, 16, c.in_channels, generator=g).to(dtype)
    control = torch.randn(1, 16, c.in_channels, generator=g).to(dtype)
    tokens = proj(torch.randn(1, 1, proj.config.embedding_dim, generator=g).to(next(proj.parameters()).dtype))
    img_ids = torch.zeros(16, 3)
    with torch.no_grad():
        double, single = infusenet_residuals(
            net, latents=latents, control=control, id_tokens=tokens.to(dtype),
            pooled=torch.randn(1, c.pooled_projection_dim, generator=g).to(dtype), timestep=torch.tensor([0.5]).to(dtype),
            img_ids=img_ids, scale=1.0, guidance=torch.tensor([1.0]).to(dtype))
    return [t.float() for t in double + single]


def test_the_node_reads_the_exported_infusenet_and_gets_the_source_residuals(tiny, exported):
    """The bf16 file is the source InfuseNet's state dict under diffusers' names, nothing missing or
    extra: loaded strictly into FluxControlNetModel it gives exactly the residuals of the source in bf16."""
    from diffusers import FluxControlNetModel

    out, output = exported
    src, proj, _ = load_infu_weights(tiny["infu"], "sim_stage1")
    sd = load_file(out / "sim_stage1" / file_names("sim_stage1")["bf16"])
    assert set(sd) == set(src.state_dict()) and {t.dtype for t in sd.values()} == {torch.bfloat16}
    assert "controlnet_x_embedder.weight" in sd, "the key ComfyUI turns into its pos_embed_input"
    back = FluxControlNetModel.from_config(src.config).to(torch.bfloat16)
    back.load_state_dict(sd, strict=True)
    want = residuals(src.to(torch.bfloat16), proj)
    got = residuals(back, proj)
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert "not FLUX.1-dev's full size" in output, "a tiny model is exported, and said to be one"


def test_the_fp8_file_is_the_e4m3fn_rounding_of_the_bf16_one(exported):
    out, _ = exported
    bf16 = load_file(out / "sim_stage1" / "infusenet_sim_bf16.safetensors")
    fp8 = load_file(out / "sim_stage1" / "infusenet_sim_fp8e4m3fn.safetensors")
    assert set(fp8) == set(bf16)
    for k, v in bf16.items():
        if v.ndim >= 2:
            assert fp8[k].dtype == FP8 and torch.equal(fp8[k].view(torch.uint8), v.to(FP8).view(torch.uint8)), k
        else:  # biases and norms keep bf16
            assert fp8[k].dtype == torch.bfloat16 and torch.equal(fp8[k], v), k
    assert (out / "sim_stage1" / "infusenet_sim_fp8e4m3fn.safetensors").stat().st_size < \
        0.7 * (out / "sim_stage1" / "infusenet_sim_bf16.safetensors").stat().st_size


def test_the_projection_file_loads_strictly_and_gives_the_same_id_tokens(tiny, exported):
    """``torch.load(...)['image_proj']`` (tensors only: weights_only) into the published resampler of the
    source's sizes, strict, and the same ID tokens."""
    out, _ = exported
    _, proj, _ = load_infu_weights(tiny["infu"], "sim_stage1")
    blob = torch.load(out / "sim_stage1" / "image_proj_model.bin", map_location="cpu", weights_only=True)
    assert list(blob) == ["image_proj"]
    back = ProjectionNetwork(**{k: v for k, v in proj.config.items() if not k.startswith("_")})
    back.load_state_dict(blob["image_proj"], strict=True)
    x = torch.randn(2, 1, proj.config.embedding_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back.eval()(x), proj(x))


def test_a_training_output_exports_as_its_stage_and_the_folder_rules_hold(tiny, exported, tmp_path):
    """Our native weights name their stage (infu.json): a stage-2 output is an aes_stage2 export, and a
    second export goes beside the first; a folder holding anything else is refused, unchanged."""
    import json
    import shutil

    from pipelines.train.checkpoint import save_weights

    net, proj, _ = load_infu_weights(tiny["infu"], "aes_stage2")
    final = tmp_path / "train-stage2" / "final"
    save_weights({"infusenet": net, "image_proj": proj}, final, {"trained_by": "infu train", "stage": 2})
    out, _ = exported
    both = tmp_path / "both"
    shutil.copytree(out, both)
    r = CliRunner().invoke(main, ["export", "comfyui", str(final.parent), "--out", str(both), "--no-fp8"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (both / "aes_stage2").iterdir()) == ["image_proj_model.bin",
                                                                        "infusenet_aes_bf16.safetensors"]
    assert (both / "sim_stage1" / "infusenet_sim_bf16.safetensors").is_file()
    readme = (both / "README.md").read_text()
    assert "aes_stage2/infusenet_aes_bf16.safetensors" in readme and "sim_stage1/image_proj_model.bin" in readme
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(main, ["export", "comfyui", str(final), "--out", str(mine)])
    assert refused.exit_code == 1 and "did not write" in refused.output and sorted(mine.iterdir()) == [mine / "notes.txt"]
    (final / "infu.json").write_text(json.dumps({"trained_by": "infu train"}))  # older weights, no stage
    (final.parent / "config.yaml").unlink(missing_ok=True)
    unknown = CliRunner().invoke(main, ["export", "comfyui", str(final), "--out", str(tmp_path / "x")])
    assert unknown.exit_code == 1 and "--variant" in unknown.output


def test_the_published_layout_round_trips_through_the_export(tiny, exported, tmp_path):
    """The exported files, laid out again as the release (InfuseNetModel/ + image_proj_model.bin), load
    through the engine's own loader as the source weights (in bf16)."""
    from diffusers import FluxControlNetModel

    from infu_model.pipeline import export_published

    out, _ = exported
    src, proj, _ = load_infu_weights(tiny["infu"], "sim_stage1")
    net = FluxControlNetModel.from_config(src.config).to(torch.bfloat16)
    net.load_state_dict(load_file(out / "sim_stage1" / "infusenet_sim_bf16.safetensors"), strict=True)
    back_proj = ProjectionNetwork(**{k: v for k, v in proj.config.items() if not k.startswith("_")})
    back_proj.load_state_dict(torch.load(out / "sim_stage1" / "image_proj_model.bin", weights_only=True)["image_proj"])
    export_published(net, back_proj, tmp_path / "infu_flux_v1.0", "sim_stage1")
    again, again_proj, meta = load_infu_weights(tmp_path / "infu_flux_v1.0", "sim_stage1")
    assert meta["variant"] == "sim_stage1"
    want = {k: v.to(torch.bfloat16) for k, v in src.state_dict().items()}
    assert all(torch.equal(again.state_dict()[k].to(torch.bfloat16), v) for k, v in want.items())
    assert all(torch.equal(again_proj.state_dict()[k], v) for k, v in proj.state_dict().items())


# The required inputs of the official node's classes, as its nodes.py declares them (INPUT_TYPES), and
# those of the ComfyUI core nodes the workflow uses
NODE_INPUTS = {
    "IDEmbeddingModelLoader": {"image_proj_model_name", "image_proj_num_tokens", "face_analysis_provider",
                               "face_analysis_det_size"},
    "ExtractIDEmbedding": {"face_detector", "arcface_model", "image_proj_model", "image"},
    "InfuseNetLoader": {"controlnet_name"},
    "InfuseNetApply": {"positive", "id_embedding", "control_net", "image", "strength", "start_percent", "end_percent"},
    "UNETLoader": {"unet_name", "weight_dtype"}, "DualCLIPLoader": {"clip_name1", "clip_name2", "type"},
    "VAELoader": {"vae_name"}, "LoadImage": {"image"}, "CLIPTextEncode": {"text", "clip"},
    "FluxGuidance": {"conditioning", "guidance"}, "EmptyImage": {"width", "height", "batch_size", "color"},
    "EmptySD3LatentImage": {"width", "height", "batch_size"},
    "KSampler": {"model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative", "latent_image",
                 "denoise"},
    "VAEDecode": {"samples", "vae"}, "SaveImage": {"images", "filename_prefix"},
}


def test_the_example_workflow_feeds_every_node_what_it_declares_and_names_the_exported_files():
    import json
    from pathlib import Path

    flow = json.loads((Path(__file__).resolve().parent.parent / "docs" / "comfyui" / "infu_api_workflow.json").read_text())
    for node_id, node in flow.items():
        need = NODE_INPUTS[node["class_type"]]
        assert need <= set(node["inputs"]), (node_id, node["class_type"], need - set(node["inputs"]))
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [node id, output index] to a node that exists
                assert value[0] in flow and isinstance(value[1], int), (node_id, value)
    by_class = {n["class_type"]: n["inputs"] for n in flow.values()}
    names = file_names("aes_stage2")
    assert by_class["InfuseNetLoader"]["controlnet_name"] == f"aes_stage2/{names['bf16']}"
    assert by_class["IDEmbeddingModelLoader"]["image_proj_model_name"] == f"aes_stage2/{names['projection']}"
    assert (by_class["EmptySD3LatentImage"]["width"], by_class["EmptySD3LatentImage"]["height"]) == (864, 1152)
