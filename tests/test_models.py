"""Models by name (infu_model/hub.py, pipelines/models.py, `infu models`), against a Hub served on
127.0.0.1 (tests/hub_server.py) that holds tiny models in the published repos' layouts: FLUX.1-dev's
diffusers folders beside a large single-file decoy, InfiniteYou's two variants, antelopev2 and
LoRAs, CLIP, PickScore and BLIP-2; a gated repo and a file whose bytes do not match their hash.
facexlib's ArcFace is served as a plain file, fetched by URL and sha256."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from curation import samples
from hub_server import Hub, Repo
from olah_hub import Olah
from infu_model.hub import (DIFFUSERS, FILE, FOLDER, ModelError, ModelNotCached, ModelRef, infu_weights, patterns,
                            resolve)
from pipelines.cli import main

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLUX, INFU, ANTELOPE = "black-forest-labs/FLUX.1-dev", "ByteDance/InfiniteYou", "supports/insightface/models/antelopev2"
DECOYS = ("flux1-dev.safetensors", "ae.safetensors", "glintr100.onnx", "sim_stage1/")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The published repos with tiny models, and facexlib's ArcFace as a plain file."""
    import tiny_onnx
    from diffusers import FluxPipeline
    from peft import LoraConfig, get_peft_model_state_dict
    from tiny_clip import make_tiny_clip
    from tiny_vlm import make_tiny_blip2

    from infu_model.faces.arcface import IRSE50
    from infu_model.tiny import make_tiny

    d = tmp_path_factory.mktemp("published")
    tiny = make_tiny(d / "tiny")
    rng = np.random.default_rng(0)
    flux = Repo({}).add_folder(tiny["base"])
    flux.files.update({"flux1-dev.safetensors": rng.bytes(3_000_000), "ae.safetensors": rng.bytes(300_000),
                       "README.md": b"FLUX.1 [dev]\n"})
    flux.license = "flux-1-dev-non-commercial-license"
    infu = Repo({}, license="apache-2.0").add_folder(tiny["infu"], "infu_flux_v1.0/")
    tiny_onnx.scrfd(d / "scrfd.onnx", score_bias=-3.0)
    tiny_onnx.genderage(d / "genderage.onnx", male=False)
    infu.files[f"{ANTELOPE}/scrfd_10g_bnkps.onnx"] = (d / "scrfd.onnx").read_bytes()
    infu.files[f"{ANTELOPE}/genderage.onnx"] = (d / "genderage.onnx").read_bytes()
    infu.files[f"{ANTELOPE}/glintr100.onnx"] = rng.bytes(200_000)
    donor = FluxPipeline.from_pretrained(tiny["base"])
    donor.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"],
                                             init_lora_weights=False))
    FluxPipeline.save_lora_weights(d / "lora", transformer_lora_layers=get_peft_model_state_dict(donor.transformer))
    for name in ("flux_realism_lora", "flux_anti_blur_lora"):
        infu.files[f"supports/optional_loras/{name}.safetensors"] = (d / "lora" / "pytorch_lora_weights.safetensors"
                                                                     ).read_bytes()
    clip, _ = make_tiny_clip(d / "clip", seed=0)
    pick, pick_proc = make_tiny_clip(d / "pick", seed=1, processor_apart=True)
    torch.manual_seed(0)
    torch.save(IRSE50().state_dict(), d / "arcface.pth")
    arcface = (d / "arcface.pth").read_bytes()
    repos = {FLUX: flux, INFU: infu,
             "openai/clip-vit-base-patch32": Repo({}).add_folder(clip),
             "yuvalkirstain/PickScore_v1": Repo({}).add_folder(pick),
             "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": Repo({}).add_folder(pick_proc),
             "Salesforce/blip2-opt-2.7b": Repo({}).add_folder(make_tiny_blip2(d / "blip2")),
             "gated-org/gated-model": Repo({"model_index.json": b"{}", "w.safetensors": rng.bytes(20_000)},
                                           gated=True),
             "some-org/tampered": Repo({"model.safetensors": rng.bytes(40_000), "config.json": b"{}"},
                                       corrupt={"model.safetensors"})}
    return {"repos": repos, "files": {"recognition_arcface_ir_se50.pth": arcface},
            "arcface_sha": hashlib.sha256(arcface).hexdigest(), "tiny": tiny}


@pytest.fixture()
def hub(published, tmp_path, monkeypatch):
    """The Hub up, this test's own cache, fetching allowed (conftest forbids it elsewhere)."""
    from pipelines import models

    with Hub(published["repos"], published["files"]) as h:
        env = {"HF_ENDPOINT": h.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(models, "_READY", {})
        go_offline(monkeypatch, False)
        h.env = {**os.environ, **env}
        h.arcface = f"{h.url('recognition_arcface_ir_se50.pth')}#sha256={published['arcface_sha']}"
        yield h


@pytest.fixture(scope="module")
def olah(published):
    """A Hub we did not write (olah, serving git repositories with LFS) holding FLUX.1-dev and InfU only."""
    with Olah({r: published["repos"][r].files for r in (FLUX, INFU)}) as server:
        yield server


@pytest.fixture()
def on_olah(olah, tmp_path, monkeypatch):
    """olah as the endpoint, this test's own cache, fetching allowed."""
    from pipelines import models

    for k, v in {"HF_ENDPOINT": olah.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(models, "_READY", {})
    go_offline(monkeypatch, False)
    return olah


def go_offline(monkeypatch, offline: bool = True) -> None:
    """HF_HUB_OFFLINE as a new process would see it (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def fetched(hub) -> list[str]:
    """The files whose bytes were sent (GETs of files, not HEADs or API calls)."""
    return [path for method, path, _ in hub.log if method == "GET" and ("/resolve/" in path or "/files/" in path)]


def one_error_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


# ------------------------------------------------------------------------------------- references --
@pytest.mark.parametrize("text,kind,location,revision,path", [
    ("hf://black-forest-labs/FLUX.1-dev", "hub", FLUX, "main", ""),
    ("hf://ByteDance/InfiniteYou@v1.0/infu_flux_v1.0/aes_stage2", "hub", INFU, "v1.0", "infu_flux_v1.0/aes_stage2"),
    ("hf://org/name@refs%2Fpr%2F3/a.bin", "hub", "org/name", "refs/pr/3", "a.bin"),
    ("~/models/flux", "local", "~/models/flux", "main", ""),
    ("https://example.org/w/arc.pth#sha256=" + "ab" * 32, "url", "https://example.org/w/arc.pth", "main", ""),
    ("s3://runs/stage1/final/", "storage", "s3://runs/stage1/final", "main", ""),
])
def test_a_model_reference_is_a_path_a_hub_id_or_a_hashed_url(text, kind, location, revision, path):
    ref = ModelRef.parse(text)
    assert (ref.kind, ref.location, ref.revision, ref.path, str(ref)) == (kind, location, revision, path, text)


@pytest.mark.parametrize("text,message", [
    ("hf://FLUX.1-dev", "a Hub model is written hf://OWNER/NAME"),
    ("hf://org/name@/x", "empty revision"),
    ("hf://org/na--me", "is not a Hub repo id"),
    ("hf://org/name/../x", "may not hold empty, '.' or '..' parts"),
    ("https://example.org/arc.pth", "needs its hash: https://example.org/arc.pth#sha256=<64 hex digits>"),
    ("ftp://host/flux", "unknown scheme"),
    ("", "a model reference must be"),
])
def test_a_malformed_reference_is_refused_in_one_line(text, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
        ModelRef.parse(text)
    assert "\n" not in str(e.value)


def test_a_model_in_a_bucket_is_copied_once_refetched_when_changed_and_read_offline_by_workers(
        s3_env, tmp_path, monkeypatch):
    """``s3://BUCKET/KEY``: the files the loader reads are copied into the cache once; an object that
    changed is fetched again; a worker reads the copy it finds; a missing one is one line."""
    from infu_model import storage
    from infu_model.hub import resolve
    from infu_model.pipeline import load_infu_weights
    from infu_model.tiny import make_tiny

    tiny = make_tiny(tmp_path / "tiny")
    uri = s3_env.upload(tiny["infu"], f"{s3_env.bucket('weights')}/infu")
    fetched, download = [], storage.download
    monkeypatch.setattr(storage, "download", lambda u, d: fetched.append(u) or download(u, d))
    got = resolve(uri, infu_weights("aes_stage2"))
    assert fetched and not [u for u in fetched if "sim_stage1" in u], "only the variant asked for"
    want, _, _ = load_infu_weights(tiny["infu"], "aes_stage2")
    net, _, _ = load_infu_weights(got, "aes_stage2")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), want.state_dict().values()))
    fetched.clear()
    assert resolve(uri, infu_weights("aes_stage2")) == got and fetched == [], "copied once"
    name = next(k for k in s3_env.keys("weights") if k.endswith(".json"))
    changed = (tiny["infu"] / name.split("/", 1)[1]).read_bytes() + b" "
    s3_env.client().put_object(Bucket="weights", Key=name, Body=changed)
    resolve(uri, infu_weights("aes_stage2"))
    assert fetched == [f"s3://weights/{name}"], "only the changed object is fetched again"
    monkeypatch.setenv("INFU_MODELS_FETCH", "node")
    fetched.clear()
    assert resolve(uri, infu_weights("aes_stage2")) == got and fetched == [], "a worker reads the copy it finds"
    monkeypatch.setenv("INFU_MODELS_FETCH", "1")
    with pytest.raises(ModelError, match="nothing under s3://weights/other"):
        resolve("s3://weights/other", infu_weights("aes_stage2"))
    with pytest.raises(ModelNotCached, match="s3://weights/other is not in the model cache"):
        resolve("s3://weights/other", infu_weights("aes_stage2"), fetch=False)


def test_a_config_refuses_a_malformed_model_naming_its_key(tmp_path):
    from curation.engine import ConfigError
    from pipelines.jobs import load_config

    (tmp_path / "s.yaml").write_text("model: {base: 'hf://flux'}\n")
    with pytest.raises(ConfigError, match=r"s.yaml: model.base: hf://flux: a Hub model is written"):
        load_config("synth", tmp_path / "s.yaml")


def test_the_packaged_defaults_name_the_published_sources():
    """With no model path at all, every job names where the weights are published (and the generation
    defaults are InfU v1.0's, the same in the configs as in the pipeline and the CLI)."""
    from infu_model import published as P
    from pipelines.jobs import load_config

    synth, ev, s1, curate = (load_config(n) for n in ("synth", "eval", "stage1", "curate"))
    assert str(synth.model.base) == str(ev.model.base) == str(s1.model.base) == P.FLUX_DEV
    assert str(synth.model.path) == str(ev.model.path) == P.INFU_V1 and synth.model.variant == "sim_stage1"
    faces = next(s for s in curate.stages if s.name == "faces").opts.insightface
    assert (str(faces.root), str(faces.arcface)) == (P.INSIGHTFACE_ROOT, P.ARCFACE)
    assert ev.id_metric.faces["insightface"] == {"root": P.INSIGHTFACE_ROOT, "arcface": P.ARCFACE}
    assert str(ev.clipscore.model) == "hf://openai/clip-vit-base-patch32"
    assert (str(ev.pickscore.model), str(ev.pickscore.processor)) == (
        "hf://yuvalkirstain/PickScore_v1", "hf://laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    assert [str(c.opts.model) for c in load_config("caption").captioners] == [
        "hf://Salesforce/blip2-opt-2.7b", "hf://OpenGVLab/InternVL3-8B-hf"]
    assert str(synth.gender.model) == P.GENDER_MODEL
    for g in (synth.generation, ev.generation):
        assert (g.width, g.height, g.steps, g.guidance, g.infusenet.scale, g.infusenet.start, g.infusenet.end) == \
            tuple(P.GENERATION[k] for k in ("width", "height", "steps", "guidance", "scale", "start", "end"))


# -------------------------------------------------------------------------------------- fetching --
def test_only_the_files_a_loader_reads_are_fetched_once_and_then_found_offline(hub, monkeypatch):
    base = resolve(f"hf://{FLUX}", DIFFUSERS)
    weights = resolve(f"hf://{INFU}/infu_flux_v1.0", infu_weights("aes_stage2"))
    det = resolve(f"hf://{INFU}/supports/insightface", patterns("models/antelopev2/scrfd_10g_bnkps.onnx"))
    assert (base / "model_index.json").is_file() and (base / "transformer" / "config.json").is_file()
    assert (weights / "aes_stage2" / "image_proj_model.bin").is_file()
    assert (det / "models" / "antelopev2" / "scrfd_10g_bnkps.onnx").is_file()
    got = fetched(hub)
    assert not [p for p in got if any(d in p for d in DECOYS)], "a file no loader reads was fetched"
    assert len(got) == len(set(got)), "a file was fetched twice"
    n = len(hub.log)
    go_offline(monkeypatch)
    assert resolve(f"hf://{FLUX}", DIFFUSERS) == base
    assert resolve(f"hf://{INFU}/infu_flux_v1.0", infu_weights("aes_stage2")) == weights
    assert len(hub.log) == n, "offline, nothing is asked of the Hub"
    with pytest.raises(ModelNotCached, match=r"hf://ByteDance/InfiniteYou/infu_flux_v1.0 is not in the model cache"
                                             r".*sim_stage1.*HF_HUB_OFFLINE=1.*`infu models pull hf://"):
        resolve(f"hf://{INFU}/infu_flux_v1.0", infu_weights("sim_stage1"))


def test_a_hub_that_is_down_leaves_the_cache_serving(hub):
    """A Hub answering 503 leaves what the cache holds serving at once (not after the listing's 20 s of
    retries), and names what it lacks."""
    first = resolve(f"hf://{FLUX}", DIFFUSERS)
    hub.down = True
    start = time.monotonic()
    assert resolve(f"hf://{FLUX}", DIFFUSERS, fetch=True) == first
    assert time.monotonic() - start < 3, "the cache waited on a Hub that is down"
    with pytest.raises(ModelNotCached, match=r"hf://ByteDance/InfiniteYou/infu_flux_v1.0 is not in the model cache .* "
                                             r"and the Hub cannot be reached"):
        resolve(f"hf://{INFU}/infu_flux_v1.0", infu_weights("aes_stage2"), fetch=True)


def test_a_worker_fetches_what_its_node_lacks_once(hub, monkeypatch):
    """A Ray worker (INFU_MODELS_FETCH=node) reads the cache and asks the Hub nothing when the model is
    there; on a node that lacks it (one that joined the cluster late) it fetches it through the same
    code, and four workers of that node starting at once fetch each file once."""
    import concurrent.futures

    monkeypatch.setenv("INFU_MODELS_FETCH", "node")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: resolve(f"hf://{FLUX}", DIFFUSERS), range(4)))
    assert len(set(paths)) == 1 and (paths[0] / "model_index.json").is_file()
    got = fetched(hub)
    assert got and len(got) == len(set(got)), f"fetched twice: {sorted(got)}"
    n = len(hub.log)
    assert resolve(f"hf://{FLUX}", DIFFUSERS) == paths[0]
    assert len(hub.log) == n, "a worker that finds the model cached asks the Hub nothing"


def test_the_embedded_rays_workers_fetch_once_per_node_and_the_driver_fetches(ray_local):
    """The workers of the embedded Ray inherit the node switch from its raylet (no runtime_env, so
    that they may be the workers Ray prestarts); the driver keeps its environment."""
    import ray

    @ray.remote(num_cpus=0)
    def switch():
        return os.environ.get("INFU_MODELS_FETCH")

    assert ray.get(switch.remote()) == "node"
    assert os.environ.get("INFU_MODELS_FETCH") != "node"


def test_an_interrupted_download_goes_on_from_what_it_has(hub, published, tmp_path):
    """A dropped connection is retried in the same call; files a killed fetch finished are not fetched
    again (huggingface_hub keeps whole files); a URL download a killed run left half done continues with
    a range request from the bytes it has. Every result matches its hash."""
    repo = published["repos"][FLUX]
    shard = "transformer/diffusion_pytorch_model.safetensors"
    repo.cut[shard] = 3000
    try:
        path = resolve(f"hf://{FLUX}/{shard}", FILE)
    finally:
        repo.cut.clear()
    assert path.read_bytes() == repo.files[shard]
    before = fetched(hub)
    resolve(f"hf://{FLUX}", DIFFUSERS)  # the rest of the pipeline: the shard it has is not asked for again
    assert [p for p in fetched(hub)[len(before):] if p.endswith(shard)] == []

    data = published["files"]["recognition_arcface_ir_se50.pth"]
    part = tmp_path / "hf" / "infu" / "urls" / published["arcface_sha"] / "recognition_arcface_ir_se50.pth.incomplete"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:5000])
    assert resolve(hub.arcface).read_bytes() == data and not part.exists()
    assert [rng for _, p, rng in hub.log if p.endswith("arcface_ir_se50.pth")] == ["bytes=5000-"]


def test_two_jobs_starting_at_once_share_one_download(hub):
    code = ("import sys; from infu_model.hub import resolve, DIFFUSERS; "
            "resolve(sys.argv[1], DIFFUSERS); resolve(sys.argv[2])")
    procs = [subprocess.Popen([sys.executable, "-c", code, f"hf://{FLUX}", hub.arcface], env=hub.env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()[-2000:]
    got = fetched(hub)
    assert got and len(got) == len(set(got)), f"fetched twice: {sorted(got)}"


@pytest.mark.parametrize("args,message", [
    (["--base", "hf://gated-org/gated-model"],
     r"FLUX base: hf://gated-org/gated-model: gated-org/gated-model is gated: accept its licence on "
     r"http://127\.0\.0\.1:\d+/gated-org/gated-model and log in with `hf auth login` or set HF_TOKEN"),
    (["--base", "hf://black-forest-labs/FLUX.1-dv"],
     r"FLUX base: hf://black-forest-labs/FLUX.1-dv: no model repo black-forest-labs/FLUX.1-dv on"),
    (["--infu", "hf://ByteDance/InfiniteYou/infu_flux_v2.0"],
     r"InfU weights \(aes_stage2\): hf://ByteDance/InfiniteYou/infu_flux_v2.0: ByteDance/InfiniteYou has no file or "
     r"folder 'infu_flux_v2.0' at revision main"),
    (["--base", "hf://black-forest-labs/FLUX.1-dev@v9"], r"has no revision 'v9'"),
    (["--lora", "hf://some-org/tampered/model.safetensors"],
     r"LoRA: hf://some-org/tampered/model.safetensors: model.safetensors does not match its published sha256 .*removed from the "
     r"cache, never loaded"),
    (["--arcface", "URL#sha256=" + "0" * 64, "--face-backend", "insightface"],
     r"ArcFace IR-SE50: .*the file fetched does not match its sha256"),
])
def test_every_model_error_is_one_line(hub, args, message, tmp_path):
    args = [a.replace("URL", hub.url("recognition_arcface_ir_se50.pth")) for a in args]
    r = CliRunner().invoke(main, ["generate", "--id-image", str(samples.grace_hopper_path()), "--prompt", "p",
                                  "--device", "cpu", "--out", str(tmp_path / "x.png"), *args])
    import re
    assert re.search(message, one_error_line(r)), r.output
    assert not (tmp_path / "x.png").exists()
    cache = tmp_path / "hf" / "hub" / "models--some-org--tampered" / "blobs"
    assert not cache.exists() or not any(cache.iterdir()), "a file that failed its hash stays in no cache"


def test_offline_without_the_model_names_the_repo_and_the_command(hub, monkeypatch, tmp_path):
    go_offline(monkeypatch)
    r = CliRunner().invoke(main, ["generate", "--id-image", str(samples.grace_hopper_path()), "--prompt", "p",
                                  "--out", str(tmp_path / "x.png")])
    assert one_error_line(r) == (
        f"Error: FLUX base: hf://{FLUX} is not in the model cache ({tmp_path / 'hf' / 'hub'}) and HF_HUB_OFFLINE=1 "
        f"forbids fetching: fetch it with `infu models pull hf://{FLUX}` where the Hub can be reached")
    assert hub.log == []


def test_code_from_a_checkpoint_runs_only_when_asked_and_pinned():
    from curation.engine import ConfigError
    from pipelines.jobs import load_config

    def captioner(**block):
        cfg = load_config("caption", overrides={"captioners": [{"name": "iv2", "backend": "internvl2", **block}]})
        return cfg.captioners[0]

    with pytest.raises(ConfigError, match="runs the modelling code inside the checkpoint: set trust_remote_code"):
        captioner(model="hf://OpenGVLab/InternVL2-8B").check_code()
    with pytest.raises(ConfigError, match=r"pin it to a commit \(hf://OpenGVLab/InternVL2-8B@<40-hex commit>\)"):
        captioner(model="hf://OpenGVLab/InternVL2-8B", trust_remote_code=True).check_code()
    captioner(model="hf://OpenGVLab/InternVL2-8B@" + "a" * 40, trust_remote_code=True).check_code()
    with pytest.raises(ConfigError, match="trust_remote_code is for the internvl2 backend only"):
        load_config("caption", overrides={"captioners": [{"name": "blip2", "trust_remote_code": True}]}
                    ).captioners[0].check_code()


# ------------------------------------------------------------------------------------ by name, end to end --
@pytest.mark.slow
def test_generate_with_no_model_path_then_offline_from_the_cache(hub, tmp_path):
    """`infu generate --id-image X --prompt P`: FLUX.1-dev and InfU v1.0 by their published names (the
    tiny ones here), only what the loaders read; then the same command with the Hub gone and
    HF_HUB_OFFLINE=1 gives the same image from the cache. No step bars, no deprecation warnings."""
    cmd = [str(BIN / "infu"), "generate", "--id-image", str(samples.grace_hopper_path()), "--prompt", "a portrait",
           "--dtype", "float32", "--device", "cpu", "--steps", "2", "--width", "64", "--height", "64",
           "--lora", "realism:0.5"]
    first = subprocess.run([*cmd, "--out", str(tmp_path / "a.png")], env=hub.env, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    got = fetched(hub)
    assert any("aes_stage2/InfuseNetModel" in p for p in got) and any("flux_realism_lora" in p for p in got)
    assert not [p for p in got if any(d in p for d in DECOYS + ("anti_blur", "supports/insightface"))], got
    assert len(got) == len(set(got))
    assert "Warning" not in first.stderr and "deprecat" not in first.stderr.lower(), first.stderr[-3000:]
    assert "it/s]" not in first.stderr.split("models:")[-1], "a bar per denoising step"
    hub.stop()
    second = subprocess.run([*cmd, "--out", str(tmp_path / "b.png")], env={**hub.env, "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_insightface_backend_by_name(hub, tmp_path):
    """InfU's face backend with its default model names: antelopev2's detector alone out of the InfU
    repo, facexlib's ArcFace by URL and hash (a URL on 127.0.0.1 here: the default is GitHub's)."""
    from infu_model.faces import make_face_analyzer

    faces = make_face_analyzer({"backend": "insightface", "insightface": {"arcface": hub.arcface}})
    rgb = np.asarray(samples.grace_hopper())
    found = faces.detect(rgb)
    assert found and faces.embed(rgb, found[0]).shape == (512,)
    got = fetched(hub)
    assert sorted(Path(p).name for p in got) == ["recognition_arcface_ir_se50.pth", "scrfd_10g_bnkps.onnx"]


@pytest.mark.slow
def test_infu_run_with_models_by_name_then_offline(hub, tmp_path):
    """`infu run` of a pipeline that names every model by its Hub id (base, the InfU weights, CLIP and
    PickScore by their defaults): fetched once in the driver before any work, its workers reading the
    cache; with the Hub gone and HF_HUB_OFFLINE=1 a second run gives the same scores."""
    ids = tmp_path / "ids"
    ids.mkdir()
    samples.grace_hopper().save(ids / "grace.png")
    (ids / "ids.yaml").write_text(yaml.safe_dump({"identities": [
        {"name": "grace", "gender": "female", "reference": "grace.png"}]}))
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump({"prompts": [{"id": "a1", "gender": "any", "text": "a portrait of a person"}]}))

    def pipeline(root: str) -> Path:
        spec = {"root": str(tmp_path / root), "base": f"hf://{FLUX}", "progress": False,
                "ray": {"num_cpus": 2, "object_store_memory": 300_000_000},
                "stages": {"eval": {"ids": str(ids), "model": f"hf://{INFU}/infu_flux_v1.0", "label": "tiny",
                                    "set": {"benchmark": str(bench), "model": {"dtype": "float32", "device": "cpu"},
                                            "generation": {"width": 64, "height": 64, "steps": 2},
                                            "id_metric": {"faces": {"backend": "dlib"}},
                                            "clipscore": {"device": "cpu"}, "pickscore": {"device": "cpu"},
                                            "bootstrap": {"samples": 100}}}}}
        path = tmp_path / f"{root}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    first = subprocess.run([str(BIN / "infu"), "run", str(pipeline("online"))], env=hub.env, capture_output=True,
                           text=True, timeout=900, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    got = fetched(hub)
    assert len(got) == len(set(got)), "fetched once, by the driver alone"
    assert {p.split("/resolve/")[0].strip("/") for p in got} == {
        FLUX, INFU, "openai/clip-vit-base-patch32", "yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"}
    assert not [p for p in got if any(d in p for d in DECOYS)]
    hub.stop()
    second = subprocess.run([str(BIN / "infu"), "run", str(pipeline("offline"))], capture_output=True, text=True,
                            env={**hub.env, "HF_HUB_OFFLINE": "1"}, timeout=900, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-4000:]
    scores = [json.loads((tmp_path / r / "eval" / "summary.json").read_text()) for r in ("online", "offline")]
    for s in scores:
        s.pop("elapsed_s")
    assert scores[0] == scores[1] and scores[0]["scorers"]["clip_score"]["ran"], scores[0]


# ------------------------------------------------------------------------------------------ infu models --
def test_infu_models_list_pull_and_verify(hub, tmp_path):
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"variant": "aes_stage2"}}))
    listed = CliRunner().invoke(main, ["models", "list", "--config", f"synth={cfg}", "--job", "synth"])
    assert listed.exit_code == 0, listed.output
    assert f"hf://{FLUX}" in listed.output and "not cached" in listed.output
    assert "flux-1-dev-non-commercial-license" in listed.output
    pulled = CliRunner().invoke(main, ["models", "pull", "--job", "synth", "--config", f"synth={cfg}"])
    assert pulled.exit_code == 0, pulled.output
    again = CliRunner().invoke(main, ["models", "list", "--config", f"synth={cfg}", "--job", "synth"])
    assert "not cached" not in again.output.split(f"hf://{INFU}/infu_flux_v1.0")[0]
    ok = CliRunner().invoke(main, ["models", "verify", f"hf://{FLUX}"])
    assert ok.exit_code == 0 and "every file matches its published hash" in ok.output, ok.output
    blob = next((tmp_path / "hf" / "hub" / "models--black-forest-labs--FLUX.1-dev" / "blobs").iterdir())
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    bad = CliRunner().invoke(main, ["models", "verify", f"hf://{FLUX}"])
    assert bad.exit_code == 1 and "does not match" in bad.output and "infu models pull" in bad.output, bad.output


def test_the_offline_demo_names_no_model_it_would_have_to_fetch(sample_dir, tmp_path):
    """scripts/demo.sh runs configs/pipeline-tiny.yaml on a machine without network: every model its
    stages name is a local folder (captioners and CLIP scorers are switched off there, and say so)."""
    from pipelines.run import plan

    spec = yaml.safe_load((ROOT / "configs" / "pipeline-tiny.yaml").read_text())
    for d in ("tiny/base", "eval_ids"):
        (tmp_path / d).mkdir(parents=True)
    spec.update(root=str(tmp_path / "run"), base=str(tmp_path / "tiny" / "base"), sources=[f"folder={sample_dir}"])
    spec["stages"]["eval"]["ids"] = str(tmp_path / "eval_ids")
    named = [n.ref for step in plan(spec) for n in step.cfg.needs()]
    assert named and [str(r) for r in named if r.fetched] == []


# ------------------------------------------------------------------------ against a Hub we did not write --
def cached_files(root: Path) -> dict:
    """Every file under a Hub cache's snapshots: path -> bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("snapshots/**/*"))
            if p.is_file()}


def tamper(snapshot: Path, path: str) -> None:
    blob = (snapshot / path).resolve()
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[::-1] + b"!")


def test_a_cache_pulled_from_an_independent_hub_verifies_clean_and_generates_offline(on_olah, tmp_path,
                                                                                     monkeypatch):
    """`infu generate` with no model path fetches FLUX.1-dev and InfU from olah (LFS weights as git-lfs
    lays them); `infu models verify` then finds every file good, online and offline, and removes
    nothing; offline, the same command gives the same image from the cache."""
    from pipelines import models

    gen = ["generate", "--id-image", str(samples.grace_hopper_path()), "--prompt", "a portrait", "--dtype",
           "float32", "--device", "cpu", "--steps", "2", "--width", "64", "--height", "64"]
    first = CliRunner().invoke(main, [*gen, "--out", str(tmp_path / "a.png")])
    assert first.exit_code == 0, first.output
    cache = tmp_path / "hf" / "hub"
    before = cached_files(cache)
    assert any(p.endswith(".safetensors") for p in before) and any(p.endswith("config.json") for p in before)
    for offline in (False, True):
        go_offline(monkeypatch, offline)
        ok = CliRunner().invoke(main, ["models", "verify", f"hf://{FLUX}", f"hf://{INFU}"])
        assert ok.exit_code == 0 and ok.output.count("every file matches its published hash") == 2, ok.output
        assert cached_files(cache) == before, "verify changed a correct cache"
    monkeypatch.setattr(models, "_READY", {})
    second = CliRunner().invoke(main, [*gen, "--out", str(tmp_path / "b.png")])
    assert second.exit_code == 0, second.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_verify_removes_a_tampered_lfs_file_and_a_tampered_regular_file_and_nothing_else(on_olah, tmp_path,
                                                                                         monkeypatch):
    """A weight file (LFS: its sha256) and a config (a regular file: its git blob id) whose cached bytes
    changed are named and removed, online (the Hub's listing) and offline (the hash each was stored
    under); every other file stays; a pull fetches the two again."""
    from pipelines import models

    pulled = CliRunner().invoke(main, ["models", "pull", f"hf://{FLUX}"])
    assert pulled.exit_code == 0, pulled.output
    snapshot = next((tmp_path / "hf" / "hub" / "models--black-forest-labs--FLUX.1-dev" / "snapshots").iterdir())
    weights, config = "transformer/diffusion_pytorch_model.safetensors", "transformer/config.json"
    for offline in (False, True):
        tamper(snapshot, weights)
        tamper(snapshot, config)
        rest = {k: v for k, v in cached_files(snapshot).items() if k not in (weights, config)}
        go_offline(monkeypatch, offline)
        bad = CliRunner().invoke(main, ["models", "verify", f"hf://{FLUX}"])
        assert bad.exit_code == 1 and "2 file(s) did not match and were removed" in bad.output, bad.output
        assert f"{weights} does not match its published sha256" in bad.output
        assert f"{config} does not match its published git blob id" in bad.output
        assert not (snapshot / weights).exists() and not (snapshot / config).exists()
        assert cached_files(snapshot) == rest, "a correct file was removed"
        go_offline(monkeypatch, False)
        monkeypatch.setattr(models, "_READY", {})  # (what a new `infu` process starts with)
        again = CliRunner().invoke(main, ["models", "pull", f"hf://{FLUX}"])
        assert again.exit_code == 0 and (snapshot / weights).is_file() and (snapshot / config).is_file(), again.output


def test_verify_checks_the_commit_the_cache_holds_after_the_branch_moved_on(tmp_path, monkeypatch):
    """A repo's main gets a new commit after the pull: `verify` checks (and catches) the files of the
    commit the cache holds, against the Hub's listing of that commit, instead of looking for the new
    commit's snapshot, which was never fetched (a ValueError from huggingface_hub before)."""
    from infu_model.hub import verify

    weights = np.random.default_rng(3).bytes(30_000)
    with Olah({"some-org/moving": {"config.json": b"{}", "model.safetensors": weights}}) as server:
        for k, v in {"HF_ENDPOINT": server.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}.items():
            monkeypatch.setenv(k, v)
        go_offline(monkeypatch, False)
        first = resolve("hf://some-org/moving", FOLDER)
        assert server.commit("some-org/moving", {"README.md": b"a newer commit\n"}) != first.name
        tamper(first, "model.safetensors")
        bad = verify("hf://some-org/moving")
    assert bad == [f"hf://some-org/moving: model.safetensors does not match its published sha256 (expected "
                   f"{hashlib.sha256(weights).hexdigest()[:12]}..., got {bad[0].split('got ')[1][:12]}...): removed"]
    assert not (first / "model.safetensors").exists() and (first / "config.json").is_file()


def test_models_list_gives_every_model_its_own_state(on_olah, tmp_path):
    """`infu models list` with an endpoint that lacks most of the eval job's repos lists every model
    with its own state (cached, not cached with its size and licence, not on the endpoint): none stops
    the others."""
    CliRunner().invoke(main, ["models", "pull", f"hf://{FLUX}"])
    listed = CliRunner().invoke(main, ["models", "list", "--job", "eval"])
    assert listed.exit_code == 0, listed.output
    lines = {ln.split()[1]: ln for ln in listed.output.splitlines() if ln.strip()}
    assert "cached at" in lines[f"hf://{FLUX}"]
    assert "not cached" in lines[f"hf://{INFU}/infu_flux_v1.0"] and "MB" in lines[f"hf://{INFU}/infu_flux_v1.0"]
    for repo in ("openai/clip-vit-base-patch32", "yuvalkirstain/PickScore_v1"):
        assert f"not cached; no model repo {repo} on {on_olah.endpoint}" in lines[f"hf://{repo}"], listed.output


def test_models_list_says_a_gated_model_is_gated(hub, tmp_path):
    """The gate is a state only our own Hub can stage (olah serves no gated repo)."""
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"base": "hf://gated-org/gated-model"}}))
    listed = CliRunner().invoke(main, ["models", "list", "--job", "synth", "--config", f"synth={cfg}"])
    assert listed.exit_code == 0, listed.output
    line = next(ln for ln in listed.output.splitlines() if "gated-org" in ln)
    assert "not cached" in line and "gated" in line, line
    assert "hf://ByteDance/InfiniteYou/infu_flux_v1.0" in listed.output, "the rest are listed too"
