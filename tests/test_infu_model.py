"""InfU model: projection network, InfuseNet wiring, keypoint control, pipeline (tiny random FLUX)."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import FluxPipeline

from curation import samples
from infu_model.control import COLORS, draw_kps
from infu_model.infusenet import in_window, infusenet_depth, residual_index
from infu_model.pipeline import InfUPipeline, NoFaceError, check_compatible, load_infu_weights
from infu_model.projection import ProjectionNetwork
from infu_model.tiny import make_tiny, tiny_infu
from pipelines.cli import main

KW = dict(prompt="a portrait photo", width=64, height=64, num_inference_steps=4, seed=7, output_type="np",
          max_sequence_length=32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pipe(tiny):
    pipe = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"], variant="aes_stage2")
    pipe.set_progress_bar_config(disable=True)
    return pipe


PUBLISHED_KEYS = {"latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias", "norm_out.weight",
                  "norm_out.bias"} | {f"layers.{i}.{k}" for i in range(4) for k in (
                      "0.norm1.weight", "0.norm1.bias", "0.norm2.weight", "0.norm2.bias", "0.to_q.weight",
                      "0.to_kv.weight", "0.to_out.weight", "1.0.weight", "1.0.bias", "1.1.weight", "1.3.weight")}


SMALL_PROJECTION = dict(dim=64, depth=2, dim_head=4, output_dim=96, ff_mult=2)  # (heads: the published 20)


def test_projection_matches_the_published_state_dict_and_shapes():
    with torch.device("meta"):  # the published sizes, without 300 MB of random weights
        m = ProjectionNetwork()
        sd = m.state_dict()
        assert m(torch.empty(2, 512)).shape == (2, 8, 4096)
    assert set(sd) == PUBLISHED_KEYS
    assert sd["latents"].shape == (1, 8, 1280) and sd["layers.2.0.to_kv.weight"].shape == (2560, 1280)
    assert sd["layers.0.1.1.weight"].shape == (5120, 1280) and sd["proj_out.weight"].shape == (4096, 1280)
    small, x = ProjectionNetwork(**SMALL_PROJECTION), torch.randn(2, 512)
    assert torch.equal(small(x), small(x[:, None]))  # one embedding per row, with or without its token axis


def test_projection_bin_and_native_round_trip(tmp_path):
    """The release's file format (its layout and sizes: the test above) at a small size: the sizes are
    read back off the tensors, and the head count is the published 20."""
    torch.manual_seed(0)
    m = ProjectionNetwork(**SMALL_PROJECTION).eval()
    torch.save({"image_proj": m.state_dict()}, tmp_path / "image_proj_model.bin")  # exactly the release's format
    from_bin = ProjectionNetwork.from_infu_bin(tmp_path / "image_proj_model.bin")
    m.save_pretrained(tmp_path / "native")
    native = ProjectionNetwork.from_pretrained(tmp_path / "native")
    assert (tmp_path / "native" / "diffusion_pytorch_model.safetensors").exists()
    assert from_bin.config.items() >= {**SMALL_PROJECTION, "heads": 20}.items()
    x = torch.randn(3, 512)
    with torch.no_grad():
        assert torch.equal(m(x), from_bin(x)) and torch.equal(m(x), native(x))
    bad = m.state_dict()
    bad.pop("norm_out.bias")
    torch.save({"image_proj": bad}, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match="norm_out.bias"):
        ProjectionNetwork.from_infu_bin(tmp_path / "bad.bin")


def test_infusenet_depth_and_residual_mapping_follow_diffusers():
    assert infusenet_depth(19, 38, 4) == (4, 10)  # the published InfuseNet for FLUX.1-dev
    assert [residual_index(k, 19, 4) for k in range(19)] == [k // 5 for k in range(19)]
    assert [residual_index(k, 38, 10) for k in range(38)] == [k // 4 for k in range(38)]
    assert residual_index(18, 19, 4) == 3 and residual_index(37, 38, 10) == 9
    assert [in_window(i, 10, 0.2, 0.7) for i in range(10)] == [False, False, True, True, True, True, True,
                                                               False, False, False]


def test_a_fresh_infusenet_saves_only_the_config_keys_its_class_accepts(tiny, tmp_path):
    """Built from a base loaded from disk (whose config names out_channels and where it came from), the
    InfuseNet's saved config holds only FluxControlNetModel's own keys, so loading it says nothing."""
    import inspect
    import json
    import logging

    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    from infu_model.infusenet import build_infusenet

    net = build_infusenet(FluxTransformer2DModel.from_pretrained(tiny["base"] / "transformer"))
    net.save_pretrained(tmp_path / "net")
    accepted = set(inspect.signature(FluxControlNetModel.__init__).parameters) | {"_class_name", "_diffusers_version"}
    assert set(json.loads((tmp_path / "net" / "config.json").read_text())) <= accepted
    said, hear = [], logging.Handler()
    hear.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("diffusers").addHandler(hear)  # (diffusers' records do not reach the root logger)
    try:
        FluxControlNetModel.from_pretrained(tmp_path / "net")
    finally:
        logging.getLogger("diffusers").removeHandler(hear)
    assert not [m for m in said if "not expected" in m], said


def test_keypoints_are_drawn_as_specified():
    kps = np.array([[40.0, 50.0], [90.0, 50.0], [65.0, 80.0], [45.0, 110.0], [85.0, 110.0]])
    img = np.asarray(draw_kps((128, 160), kps))
    assert img.shape == (160, 128, 3) and img.dtype == np.uint8
    for (x, y), c in zip(kps.astype(int), COLORS):
        assert tuple(img[y, x]) == c, "filled circle of the keypoint's colour"
        assert tuple(img[y + 9, x]) == c and tuple(img[y + 12, x]) != c or (x, y) == (65, 80)
    # the limb from the left eye to the nose, outside both circles: 0.6 x red
    mid = ((kps[0] + kps[2]) / 2).astype(int)
    assert tuple(img[mid[1], mid[0]]) == (153, 0, 0)
    assert tuple(img[5, 5]) == (0, 0, 0) and tuple(img[150, 120]) == (0, 0, 0)
    colours = {tuple(p) for p in img.reshape(-1, 3)}
    assert colours <= {(0, 0, 0), *COLORS, *[tuple(int(v * 0.6) for v in c) for c in COLORS]}


def test_scale_zero_reproduces_flux_pipeline(pipe, tiny):
    flux = FluxPipeline.from_pretrained(tiny["base"])
    ref = flux(prompt=KW["prompt"], width=64, height=64, num_inference_steps=4, max_sequence_length=32,
               generator=torch.Generator("cpu").manual_seed(7), output_type="np").images
    out = pipe(samples.astronaut(), infusenet_conditioning_scale=0.0, **KW).images
    assert np.array_equal(out, ref)
    assert not np.array_equal(pipe(samples.astronaut(), **KW).images, ref), "InfuseNet changes the image"


def test_skipping_steps_outside_the_window_equals_computing_and_zeroing(pipe):
    window = dict(infusenet_guidance_start=0.25, infusenet_guidance_end=0.75)
    skipped = pipe(samples.astronaut(), **window, **KW).images
    computed = pipe(samples.astronaut(), skip_outside_window=False, **window, **KW).images
    assert np.array_equal(skipped, computed)
    assert np.abs(skipped - pipe(samples.astronaut(), **KW).images).mean() > 1e-3


def test_identity_and_seed_change_the_output_same_seed_reproduces(pipe):
    a = pipe(samples.astronaut(), **KW).images
    assert np.array_equal(a, pipe(samples.astronaut(), **KW).images)
    assert np.abs(a - pipe(samples.grace_hopper(), **KW).images).mean() > 5e-4
    assert np.abs(a - pipe(samples.astronaut(), **{**KW, "seed": 8}).images).mean() > 1e-2


def test_one_identity_in_a_list_or_a_whole_image_region_is_the_single_id_call_exactly(pipe):
    single = pipe(samples.astronaut(), **KW).images
    assert np.array_equal(pipe([samples.astronaut()], **KW).images, single)
    assert np.array_equal(pipe(samples.astronaut(), regions=[(0, 0, 64, 64)], **KW).images, single)


def test_each_identitys_residuals_reach_only_its_region(pipe, monkeypatch):
    """Two people: at every step the transformer gets, on each image token, the InfuseNet residuals of
    the identity whose region holds it (the default: left and right halves), and none on a token that
    no region holds; the two people's residuals differ, so the regions tell them apart."""
    import infu_model.pipeline as P

    made, given = [], []
    real = P.infusenet_residuals
    monkeypatch.setattr(P, "infusenet_residuals", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    forward = pipe.transformer.forward

    def seen(*a, **k):
        given.append((k["controlnet_block_samples"], k["controlnet_single_block_samples"]))
        return forward(*a, **k)

    monkeypatch.setattr(pipe.transformer, "forward", seen)
    a, g = samples.astronaut(), samples.grace_hopper()
    for regions in (None, [(0, 0, 32, 64), (48, 32, 64, 64)]):
        made.clear(), given.clear()
        out = pipe([a, g], regions=regions, **KW).images
        assert out.shape == (1, 64, 64, 3) and len(made) == 2 * len(given) == 8
        px = pipe.vae_scale_factor * 2  # output pixels per token side (16 for FLUX; the tiny VAE's is smaller)
        tokens = np.arange((64 // px) ** 2).reshape(64 // px, 64 // px)  # row by row
        left = tokens[:, :32 // px].ravel()
        right = tokens[:, 32 // px:].ravel() if regions is None else tokens[32 // px:, 48 // px:].ravel()
        nobody = np.setdiff1d(tokens.ravel(), np.concatenate([left, right]))
        for step, (double, single) in enumerate(given):
            mine, theirs = made[2 * step], made[2 * step + 1]
            for part in (0, 1):
                for got, r0, r1 in zip((double, single)[part], mine[part], theirs[part]):
                    assert torch.equal(got[:, left], r0[:, left]) and torch.equal(got[:, right], r1[:, right])
                    assert not torch.equal(r0[:, right], r1[:, right])
                    assert not got[:, nobody].any()
    with pytest.raises(ValueError, match="2 regions for 1 identities"):
        pipe(a, regions=[(0, 0, 32, 64), (32, 0, 64, 64)], **KW)
    with pytest.raises(ValueError, match="is not a box"):
        pipe([a, g], regions=[(0, 0, 32, 64), (32, 0, 96, 64)], **KW)


def test_region_masks_weigh_tokens_by_their_covered_pixels_and_share_overlaps():
    from PIL import Image

    from infu_model.regions import default_regions, token_masks

    assert default_regions(3, 96, 32) == [(0, 0, 32, 32), (32, 0, 64, 32), (64, 0, 96, 32)]
    m = token_masks([(0, 0, 24, 32), (8, 0, 32, 32)], 32, 32)[..., 0].numpy()  # 2 x 2 tokens
    # token (0, 0): 16 px of it in the first box, 8 in the second; overlapping shares sum to one
    np.testing.assert_allclose(m[:, 0], [16 / 24, 8 / 24])
    np.testing.assert_allclose(m[:, 1], [1 / 3, 2 / 3])  # token (0, 1): 8 px of it in the first, all in the second
    np.testing.assert_allclose(m.sum(axis=0), [1, 1, 1, 1])
    mask = Image.new("L", (4, 4), 0)
    mask.paste(255, (2, 0, 4, 4))  # the right half, given at another size
    np.testing.assert_allclose(token_masks([mask], 64, 64)[0, :, 0].numpy().reshape(4, 4)[:, 2:], 1.0)
    np.testing.assert_allclose(token_masks([mask], 64, 64)[0, :, 0].numpy().reshape(4, 4)[:, :1], 0.0)
    with pytest.raises(ValueError, match="covers no part"):
        token_masks([(0, 0, 64, 64), Image.new("L", (4, 4), 0)], 64, 64)


def test_batch_of_prompts_and_seeds_equals_single_calls(pipe):
    both = pipe(samples.astronaut(), **{**KW, "prompt": ["a portrait photo", "a photo"], "seed": [7, 9]}).images
    one = pipe(samples.astronaut(), **{**KW, "prompt": "a photo", "seed": 9}).images
    assert both.shape[0] == 2 and np.allclose(both[1], one[0], atol=2e-5)


def test_called_like_a_diffusers_pipeline_with_the_same_image(pipe):
    """generator, latents, prompt_embeds, num_images_per_prompt, callback_on_step_end, return_dict:
    each gives the image of the InfU-style call it stands for."""
    ref = pipe(samples.astronaut(), **KW).images
    emb = pipe.id_embedding(samples.astronaut())
    call = {k: v for k, v in KW.items() if k not in ("seed", "prompt")}
    same = {"generator": pipe(prompt=KW["prompt"], id_embedding=emb, generator=torch.Generator().manual_seed(7), **call),
            "id_embedding": pipe(prompt=KW["prompt"], id_embedding=emb, seed=7, **call)}
    g = torch.Generator().manual_seed(7)  # the latents drawn first, the control's VAE noise after them
    lat, _ = pipe.prepare_latents(1, pipe.transformer.config.in_channels // 4, 64, 64, torch.float32, "cpu", g)
    same["latents"] = pipe(samples.astronaut(), KW["prompt"], latents=lat, generator=g, **call)
    pe, pooled, _ = pipe.encode_prompt(KW["prompt"], None, device="cpu", max_sequence_length=32)
    same["prompt_embeds"] = pipe(samples.astronaut(), prompt_embeds=pe, pooled_prompt_embeds=pooled, seed=7, **call)
    for name, out in same.items():  # to float rounding: CPU kernels may reduce in another order for other memory
        assert np.allclose(out.images, ref, rtol=0, atol=1e-6), name
    (images,) = pipe(samples.astronaut(), return_dict=False, **KW)
    assert np.array_equal(images, ref)
    two = pipe(samples.astronaut(), num_images_per_prompt=2, **KW).images
    eight = pipe(samples.astronaut(), **{**KW, "seed": 8}).images
    assert two.shape[0] == 2 and np.allclose(two[0], ref[0], atol=2e-5) and np.allclose(two[1], eight[0], atol=2e-5)
    seen = []

    def stop_after_two(p, i, t, tensors):
        seen.append((i, tuple(tensors)))
        p._interrupt = i == 1
        return {"latents": tensors["latents"]}

    cut = pipe(samples.astronaut(), callback_on_step_end=stop_after_two, **KW).images
    assert seen == [(0, ("latents",)), (1, ("latents",))] and not np.array_equal(cut, ref)
    for bad, match in (({"prompt_embeds": pe, "pooled_prompt_embeds": pooled}, "either prompt or prompt_embeds"),
                       ({"width": 66}, "multiples of"), ({"infusenet_guidance_start": 0.8,
                                                             "infusenet_guidance_end": 0.2}, "start <= end"),
                       ({"callback_on_step_end_tensor_inputs": ["noise"]}, "noise"),
                       ({"seed": [1, 2, 3], "num_images_per_prompt": 2}, "3 seeds for 2 images")):
        with pytest.raises(ValueError, match=match):
            pipe(samples.astronaut(), **{**KW, **bad})


def test_control_image_and_no_face_errors(pipe):
    base = pipe(samples.astronaut(), **{**KW, "width": 128, "height": 128}).images
    ctrl = pipe(samples.astronaut(), control_image=samples.grace_hopper(), **{**KW, "width": 128, "height": 128}).images
    assert np.abs(base - ctrl).mean() > 1e-3
    with pytest.raises(NoFaceError, match="ID image"):
        pipe(samples.cat(), **KW).images
    with pytest.raises(NoFaceError, match="control image"):
        pipe(samples.astronaut(), control_image=samples.cat(), **KW).images


def test_published_layout_and_native_checkpoint_load_the_same_model(pipe, tiny, tmp_path):
    """Exact by construction: both layouts give the same tensors; the images then agree to float
    rounding (1e-6: CPU kernels may pick another reduction order for another memory alignment)."""
    pipe.save_infu(tmp_path / "native", face_backend="dlib")
    native = InfUPipeline.from_pretrained(tiny["base"], tmp_path / "native")
    for part in ("infusenet", "image_proj"):
        a, b = getattr(native, part).state_dict(), getattr(pipe, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert np.allclose(native(samples.astronaut(), **KW).images, pipe(samples.astronaut(), **KW).images,
                       rtol=0, atol=1e-6)
    shards = list((tiny["infu"] / "aes_stage2" / "InfuseNetModel").glob("*.safetensors"))
    assert len(shards) > 1, "the tiny release is sharded like the real one"
    other = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"], variant="sim_stage1")
    assert not np.array_equal(other(samples.astronaut(), **KW).images, pipe(samples.astronaut(), **KW).images)


def test_infusenet_and_projection_are_components_that_save_and_load_with_the_pipeline(pipe, tiny, tmp_path):
    assert {"infusenet", "image_proj"} <= set(pipe.components)
    pipe.save_pretrained(tmp_path / "whole")
    index = (tmp_path / "whole" / "model_index.json").read_text()
    assert '"infusenet"' in index and '"image_proj"' in index
    whole = InfUPipeline.from_pretrained(tmp_path / "whole")
    assert whole.infu_meta.get("face_backend") == "dlib"
    # the same tensors; the images agree to float rounding (CPU kernels may reduce in another order)
    assert np.allclose(whole(samples.astronaut(), **KW).images, pipe(samples.astronaut(), **KW).images,
                       rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="without InfU weights"):
        InfUPipeline.from_pretrained(tiny["base"])


def test_memory_modes_give_the_same_image(tiny):
    """T5 streamed block by block for the prompt, every model group-offloaded: what runs on the CPU here
    (diffusers' model and sequential offload need an accelerator)."""
    plain = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"])
    ref = plain(samples.astronaut(), **KW).images
    streamed = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"]).set_memory("cpu", text_encoders="offload")
    hooked = [hasattr(b, "_diffusers_hook") for b in streamed.text_encoder_2.encoder.block]
    assert hooked and all(hooked), "T5 moves block by block, never as one group"
    assert np.array_equal(streamed(samples.astronaut(), **KW).images, ref)
    grouped = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"]).set_memory("cpu", offload="low_vram")
    assert np.array_equal(grouped(samples.astronaut(), **KW).images, ref)
    with pytest.raises(ValueError, match="offload must be one of"):
        plain.set_memory("cpu", offload="disk")


def test_compiled_blocks_give_the_eager_image_within_float_rounding(tiny):
    """Every FLUX block captured whole by dynamo (fullgraph) with fused QKV; the inductor code it
    generates is timed on a GPU by bench/infer.py (compiling it here would cost a minute)."""
    eager = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"])
    ref = eager(samples.astronaut(), **KW).images
    fast = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"]).compile_blocks(backend="aot_eager")
    assert fast.transformer.transformer_blocks[0].attn.fused_projections
    out = fast(samples.astronaut(), **KW).images
    assert np.abs(out - ref).max() < 1e-4, np.abs(out - ref).max()


def test_mismatched_weights_are_clear_errors(pipe, tiny, tmp_path):
    net, proj, _ = load_infu_weights(tiny["infu"])
    wrong = ProjectionNetwork(dim=32, depth=1, dim_head=8, heads=4, embedding_dim=128, output_dim=64)
    with pytest.raises(ValueError, match="joint_attention_dim"):
        check_compatible(pipe.transformer, net, wrong)
    with pytest.raises(FileNotFoundError, match="InfuseNetModel"):
        load_infu_weights(tmp_path)
    _, p512 = tiny_infu(pipe.transformer, embedding_dim=512)
    p = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"]).attach_infu(net, p512, {"backend": "dlib"})
    with pytest.raises(ValueError, match="128-d embeddings but these InfU weights expect 512-d"):
        p(samples.astronaut(), **KW).images


def test_generate_command(tiny, tmp_path):
    out = tmp_path / "g.png"
    args = ["generate", "--base", str(tiny["base"]), "--infu", str(tiny["infu"]), "--prompt", "a portrait",
            "--width", "64", "--height", "64", "--steps", "2", "--dtype", "float32", "--device", "cpu"]
    r = CliRunner().invoke(main, args + ["--id-image", str(samples.grace_hopper_path()), "--out", str(out)])
    assert r.exit_code == 0, r.output
    from PIL import Image

    assert Image.open(out).size == (64, 64)
    r = CliRunner().invoke(main, args + ["--id-image", str(samples.group_path()), "--infu", str(tmp_path / "none"),
                                         "--out", str(out)])
    assert r.exit_code == 1 and "not found" in r.output
    # two people, each in a region: the same image as the pipeline's call with those regions
    samples.astronaut().save(tmp_path / "a.png")
    two = args + ["--id-image", str(samples.grace_hopper_path()), "--id-image", str(tmp_path / "a.png"), "--seed", "3"]
    r = CliRunner().invoke(main, two + ["--region", "0,0,32,64", "--region", "32,0,64,64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    p = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"])
    p.set_progress_bar_config(disable=True)
    want = p([samples.grace_hopper(), samples.astronaut()], "a portrait", width=64, height=64, num_inference_steps=2,
             seed=3, output_type="np").images[0]
    got = np.asarray(Image.open(out), np.float64) / 255
    assert np.abs(got - want).max() <= 1 / 255 + 1e-6  # (the PNG's rounding)
    r = CliRunner().invoke(main, two + ["--region", "0,0,32,64", "--out", str(out)])
    assert r.exit_code == 2 and "1 --region for 2 --id-image" in r.output


def test_lora_stack_on_the_base(pipe, tiny, tmp_path):
    from peft import LoraConfig, get_peft_model_state_dict

    donor = FluxPipeline.from_pretrained(tiny["base"])
    donor.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                             init_lora_weights=False))
    FluxPipeline.save_lora_weights(tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(donor.transformer))
    plain = pipe(samples.astronaut(), **KW).images
    p = InfUPipeline.from_pretrained(tiny["base"], tiny["infu"])
    p.load_loras([(str(tmp_path / "lora"), 0.8)])
    with_lora = p(samples.astronaut(), **KW).images
    assert np.abs(with_lora - plain).mean() > 5e-5
    p.set_adapters(["lora0"], adapter_weights=[0.0])
    assert np.allclose(p(samples.astronaut(), **KW).images, plain, atol=1e-5)


def test_memory_auto_picks_the_least_saving_the_free_memory_fits():
    from infu_model.memory import resolve

    picked = {(free, fp8): resolve("auto", "cuda", free=free, fp8=fp8)[0].name
              for free in (80.0, 35.0, 28.0, 20.0, 10.0) for fp8 in (True, False)}
    assert picked == {(80.0, True): "full", (80.0, False): "full",
                      (35.0, True): "full, text encoders streamed", (35.0, False): "full, text encoders streamed",
                      (28.0, True): "24gb", (28.0, False): "16gb", (20.0, True): "16gb", (20.0, False): "16gb",
                      (10.0, True): "low_vram", (10.0, False): "low_vram"}, "FP8 only where the card has it"
    plan, line = resolve("auto", "cuda", free=28.0, fp8=True)
    assert line == "memory auto: 24gb (28.0 GiB free; it needs about 24)"
    assert resolve("auto", "cpu")[0].name == "full", "on the CPU nothing is offloaded"
    with pytest.raises(ValueError, match="memory must be one of auto, full, 24gb, 16gb, low_vram"):
        resolve("32gb", "cuda")


def test_fp8_is_refused_where_the_hardware_lacks_it_before_any_weight_loads(tmp_path):
    from infu_model.memory import NoFP8
    from infu_model.pipeline import load_pipeline

    with pytest.raises(NoFP8, match=r"compute capability 8\.9\+ .*this is the CPU: use memory 16gb"):
        load_pipeline(tmp_path / "no-base", tmp_path / "no-infu", device="cpu", memory="24gb")
    r = CliRunner().invoke(main, ["generate", "--base", str(tmp_path), "--infu", str(tmp_path), "--memory", "24gb",
                                  "--device", "cpu", "--id-image", str(samples.grace_hopper_path()), "--prompt", "x",
                                  "--out", str(tmp_path / "o.png")])
    assert r.exit_code == 1 and "FP8" in r.output and "Traceback" not in r.output


def test_8bit_weights_run_on_the_cpu_with_an_error_below_bf16_rounding(tiny):
    """memory 16gb: the transformer's and InfuseNet's linear layers hold int8 weights (torchao); the
    image moves from float32's by less than bfloat16 weights move it."""
    from infu_model.pipeline import load_pipeline

    def image(dtype, memory):
        pipe = load_pipeline(tiny["base"], tiny["infu"], dtype=dtype, device="cpu", memory=memory)
        pipe.set_progress_bar_config(disable=True)
        return pipe, pipe(samples.astronaut(), **KW).images.astype(np.float32)

    eight, q = image("float32", "16gb")
    weights = {type(m.weight).__name__ for net in (eight.transformer, eight.infusenet) for m in net.modules()
               if isinstance(m, torch.nn.Linear) and m.in_features % 16 == 0 and m.out_features % 16 == 0}
    assert weights == {"Int8Tensor"} and eight.memory_plan.name == "16gb"
    ref, bf = image("float32", "full")[1], image("bfloat16", "full")[1]
    assert 0 < np.abs(q - ref).mean() < np.abs(bf - ref).mean()


def test_8bit_weights_name_their_extra_when_torchao_is_missing(pipe, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # missing, whether or not it is installed here
    with pytest.raises(ImportError, match=r"torchao: pip install 'infu-engine\[quant\]'"):
        pipe.quantize_weights("int8")