"""`infu doctor` and the line each job prints at start: where every configured model runs on this
machine, and a warning wherever that is not where its config asks."""
import json

import numpy as np
from click.testing import CliRunner

from infu_model import runtime
from infu_model.runtime import placement
from pipelines.cli import main
from pipelines.jobs import load_config
from pipelines.doctor import job_lines

CUDA_FACES = """stages:
  - name: faces
    backend: insightface
    insightface: {device: cuda}
  - name: nsfw
    device: cuda
"""


def test_doctor_places_every_packaged_model_and_names_what_falls_back(tmp_path):
    r = CliRunner().invoke(main, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):])
    facts, jobs = report["machine"], report["jobs"]
    assert facts["gpus"] == [] and "CPUExecutionProvider" in facts["providers"] and facts["gloo"]
    assert set(jobs) == {"curate", "caption", "stage1", "synth", "eval", "identities"}
    assert [(p["model"], p["runtime"], p["runs_on"], p["problem"]) for p in jobs["curate"]] == [
        ("faces: dlib faces", "dlib", "cpu", ""), ("nsfw: nudenet", "onnxruntime", "cpu", ""),
        ("watermark: PP-OCR detector + recogniser", "onnxruntime", "cpu", ""),
        ("watermark: classifier infu://watermark-classifier", "torch", "cpu", "")], "curate's defaults are CPU models"
    generate = jobs["synth"][0]
    assert generate["asked"] == "cuda" and generate["runs_on"] == "cpu" and "no CUDA" in generate["problem"]


def test_a_config_asking_cuda_without_onnxruntime_gpu_is_warned_and_strict_fails(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CUDA_FACES)
    r = CliRunner().invoke(main, ["doctor", "--config", f"curate={cfg}", "--strict"])
    assert r.exit_code == 1
    curate = r.output.split("\ncurate")[1].split("\ncaption")[0]
    assert "faces: SCRFD detector (onnxruntime) on cpu: asked for cuda" in curate and "onnxruntime-gpu" in curate
    assert "faces: ArcFace (torch) on cpu: asked for cuda, falls back to the CPU" in curate
    assert "nsfw: nudenet (onnxruntime) on cpu: asked for cuda" in curate and "scripts/setup.sh --gpu" in curate
    assert "warning(s)" in r.output
    lenient = CliRunner().invoke(main, ["doctor", "--config", f"curate={cfg}"])
    assert lenient.exit_code == 0
    wrong = CliRunner().invoke(main, ["doctor", "--config", "curtae=x.yaml"])
    assert wrong.exit_code == 1 and "curtae" in wrong.output and "Traceback" not in wrong.output


def test_the_start_line_says_what_the_stage_then_does(tmp_path):
    """The placement is the one the stage's session gets: nudenet asked for cuda without a CUDA
    provider builds a CPU session, and the job's start line warns of exactly that."""
    cfg = load_config("curate", overrides={"stages": [{"name": "nsfw", "device": "cuda"}]})
    lines = job_lines("curate", cfg)
    assert lines[0].startswith("curate: runs on cpu") and lines[1].startswith("curate: warning: nsfw: nudenet")
    nsfw = cfg.stages[0]
    nsfw.ensure_setup()
    assert nsfw.model.onnx_session.get_providers() == ["CPUExecutionProvider"]
    assert placement("nudenet", "cuda", "onnxruntime").runs_on == "cpu"


def test_with_a_cuda_provider_sessions_ask_for_the_named_gpu(monkeypatch, tmp_path):
    """Where ONNX Runtime has CUDA, the session a stage builds asks for the GPU its device names (then
    the CPU): the session is built here, through ONNX Runtime's own constructor, and runs; this
    machine's ORT has no CUDA, so it falls back to the CPU as it would on a node without one."""
    import onnxruntime
    import tiny_onnx

    real, asked = onnxruntime.InferenceSession, []

    def session(*args, providers=None, **kw):
        asked.append(providers)
        return real(*args, providers=providers, **kw)

    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    monkeypatch.setattr(runtime, "ort_available", lambda: ("CUDAExecutionProvider", "CPUExecutionProvider"))
    model = tiny_onnx.genderage(tmp_path / "g.onnx", male=True)
    built = runtime.ort_session(model, "cuda:1")
    assert asked == [[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]]
    x = np.zeros((1, 3, 96, 96), np.float32)
    assert built.run(None, {built.get_inputs()[0].name: x})[0].shape == (1, 3), "the session it built runs"
    runtime.ort_session(model, "cpu")
    assert asked[-1] == ["CPUExecutionProvider"]
    p = placement("SCRFD", "cuda", "onnxruntime")
    assert p.runs_on == "cuda" and not p.problem
    assert placement("dlib faces", "cuda", "dlib").problem, "dlib-bin has no CUDA"
    train = placement("training", "cuda", "ray-train")
    assert train.runs_on == "nowhere" and "use_gpu" in train.problem


def test_gpu_setup_swaps_onnxruntime_for_its_gpu_build_and_the_cpu_setup_never_does():
    """onnxruntime and onnxruntime-gpu install the same module: the GPU setup removes the CPU one first
    and ends by checking both CUDA runtimes; the plain setup stays this machine's CPU setup."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def commands(*flags):
        r = subprocess.run(["bash", "scripts/setup.sh", *flags, "--dry-run"], cwd=root, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    gpu = commands("--gpu")
    removed = next(i for i, c in enumerate(gpu) if "uninstall" in c and c.endswith(" onnxruntime"))
    added = next(i for i, c in enumerate(gpu) if "install" in c and "onnxruntime-gpu" in c)
    assert removed < added and "--force-reinstall" in gpu[added]
    assert any(".[dev,quant,app]" in c for c in gpu) and any("CUDAExecutionProvider" in c for c in gpu)
    assert gpu[-1].endswith("infu doctor")
    cpu = commands()
    assert not any("onnxruntime-gpu" in c or "index-url" in c for c in cpu)
    assert any(c.endswith("torch==2.13.0") for c in cpu)
