"""Typed configs: every job's whole config is one declaration, its values come from the packaged
YAML only, and a wrong key, kind, choice or range is refused with the file and key path, before
any work."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.engine import ConfigError, plain
from pipelines.config import merge
from pipelines.jobs import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
JOBS = ["curate", "caption", "synth", "stage1", "stage2", "eval", "identities"]


def _yaml(name):
    """A packaged YAML as a whole config: one that ``extends`` another laid over it."""
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    base = data.pop("extends", None)
    return merge(_yaml(base), data) if base else data


def _without_unset(block: dict, documented: dict) -> dict:
    """A captioner's block less the options of other backends (null, and not in its YAML block)."""
    return {k: v for k, v in block.items() if k in documented or v not in (None, [])}


@pytest.mark.parametrize("name", JOBS)
def test_each_job_declares_exactly_what_its_yaml_documents(name):
    """YAML -> typed config -> YAML gives the file back: no value added in code, none dropped."""
    doc, cfg = _yaml(name), load_config(name)
    back = plain(cfg)
    if name == "caption":
        back["captioners"] = [_without_unset(b, d) for b, d in zip(back["captioners"], doc["captioners"])]
    assert back == doc


def test_a_partial_stage_block_keeps_the_other_yaml_defaults():
    """A user's `stages:` list replaces the default list; each block still gets its stage's defaults."""
    doc = next(b for b in _yaml("curate")["stages"] if b["name"] == "faces")
    [faces] = load_config("curate", overrides={"stages": [{"name": "faces", "backend": "dlib",
                                                           "min_face_px": 120}]}).stages
    assert faces.opts.min_face_px == 120 and faces.opts.min_face_ratio == doc["min_face_ratio"]
    assert faces.opts.dlib.det_side == doc["dlib"]["det_side"]
    assert faces.resources.batch_size == doc["resources"]["batch_size"]
    [chat] = load_config("caption", overrides={"captioners": [{"name": "llava", "backend": "chat_vlm",
                                                               "model": "/m"}]}).stages()
    assert chat.label == "llava" and chat.opts.max_new_tokens == 80, "a backend without a block shares internvl's"


@pytest.mark.parametrize("job,given,message", [
    ("curate", {"stages": [{"name": "faces", "min_face_ratio": 7}]},
     r"stages\[0\] \(faces\)\.min_face_ratio: 7 is out of range 0\.\.1"),
    ("curate", {"stages": [{"name": "faces", "dlib": {"detector": "mmod"}}]},
     r"dlib\.detector: 'mmod' is not one of 'hog', 'cnn'"),
    ("curate", {"stages": [{"name": "nsfw", "backend": "nudnet"}]},
     r"backend: 'nudnet' is not one of 'nudenet', 'transformers'"),
    ("curate", {"stages": [{"name": "nsfw", "threshhold": 0.3}]},
     r"unknown key 'threshhold' \(did you mean 'threshold'\?\)"),
    ("curate", {"stages": [{"name": "watermark", "ocr": {"det_sid": 900}}]},
     r"ocr: unknown key 'det_sid' \(did you mean 'det_side'\?\)"),
    ("curate", {"stages": [{"name": "watermark", "ocr": {"rules": {"vocabulary": 2}}}]},
     r"ocr\.rules\.vocabulary: 2 is out of range 0\.\.1"),
    ("curate", {"stages": [{"name": "facez"}]}, r"stages\[0\]: unknown stage 'facez'"),
    ("curate", {"filters": {"min_blur": "1e-4"}}, r"filters\.min_blur: expected a number, got '1e-4' \(YAML"),
    ("curate", {"filters": {"aspect": [2.0, 0.5]}}, r"aspect: \[2\.0, 0\.5\] has its lower bound above"),
    ("curate", {"filters": {"aspect": [0.5]}}, r"aspect: expected a list of 2 values"),
    ("curate", {"quality": {"resources": {"num_cpu": 1}}}, r"quality\.resources: unknown key 'num_cpu'"),
    ("synth", {"id_filter": {"max_abs_yaw": "45"}}, r"max_abs_yaw: expected a number, got '45'"),
    ("synth", {"id_filter": {"aesthetic": {"min_score": -3}}}, r"aesthetic\.min_score: -3 is out of range"),
    ("synth", {"generation": {"steps": 0}}, r"generation\.steps: 0 is out of range 1\.\.inf"),
    ("synth", {"model": {"memory": "32gb"}}, r"memory: '32gb' is not one of 'auto', 'full', '24gb', '16gb', 'low_vram'"),
    ("synth", {"loras": [{"path": "a.safetensors", "weigth": 0.8}]}, r"loras\[0\]: unknown key 'weigth'"),
    ("synth", {"face_swap": {"backend": "simswap"}}, r"'simswap' is not one of 'none', 'inswapper'"),
    ("caption", {"captioners": [{"name": "blip2", "instruction": "Describe"}]},
     r"instruction not used by the blip2 backend"),
    ("eval", {"bootstrap": {"ci": 95}}, r"bootstrap\.ci: 95 is out of range 0\.\.1"),
    ("stage1", {"train": {"lr": -0.1}}, r"train\.lr: -0\.1 is out of range 0\.\.1"),
    ("stage1", {"train": {"optimizer": "adam"}}, r"train\.optimizer: 'adam' is not one of 'adamw', 'adamw_8bit'"),
    ("stage1", {"data": {"loader": "stream"}}, r"data\.loader: 'stream' is not one of 'ray', 'plan'"),
    ("stage2", {"stage": 3}, r"stage: 3 is not one of 1, 2"),
])
def test_a_wrong_option_is_refused_naming_its_key(job, given, message):
    with pytest.raises(ConfigError, match=message):
        load_config(job, overrides=given)


def test_a_users_file_is_named_and_the_batch_arithmetic_is_checked(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("stage: 1\ntrain: {lr: 1e-4}\n")   # YAML 1.1 reads 1e-4 (no dot) as text
    with pytest.raises(ConfigError, match=r"mine\.yaml: train\.lr: expected a number, got '1e-4' \(YAML reads 1e-4 "
                                          r"as text: write 1\.0e-4\)"):
        load_config("stage1", user)
    cfg = load_config("stage1")
    cfg.check()  # the paper's values pass
    with pytest.raises(ValueError, match=r"global_batch_size 512 must be micro_batch_size 1 x a multiple of the 3"):
        cfg.updated({"ray": {"num_workers": 3}}).check()
    with pytest.raises(ValueError, match="adamw_8bit does not shard"):
        cfg.updated({"train": {"optimizer": "adamw_8bit"}, "ray": {"num_workers": 2}}).check()


def test_stages_are_built_once_with_the_config_and_resolved_without_rebuilding():
    """The config holds built stages; resolving a pool gives a copy with other resources, same options."""
    from dataclasses import replace

    cfg = load_config("curate")
    faces = cfg.stages[0]
    assert cfg.stages[0] is faces, "built when parsed, not on every access"
    moved = faces.with_(resources=replace(faces.resources, num_gpus=0.25, concurrency=4))
    assert moved.opts is faces.opts and moved.resources.actors == 4 and faces.resources.concurrency is None


def test_the_job_table_is_what_the_cli_the_pipeline_and_the_report_use():
    """One declaration per job: its config loads, it has its command, and `infu run`'s stages run jobs
    of the table. The table holds the functions themselves, yet reading it imports no training stack
    (every command reads it before its first line of output)."""
    from pipelines.cli import main
    from pipelines.jobs import JOBS
    from pipelines.run import STAGES

    for job in JOBS.values():
        assert all(isinstance(load_config(d), job.config) for d in job.defaults)
        assert job.name in main.commands, f"infu {job.name}"
    assert {s.job for s in STAGES} <= set(JOBS)  # (infu identities is a command of its own, not a stage)
    heavy = subprocess.run([sys.executable, "-c", "import sys, pipelines.jobs; "
                            "print(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert heavy == "[]", f"reading the job table imported {heavy}"


def test_stage2_states_only_what_differs_and_takes_the_rest_from_stage1(tmp_path, monkeypatch):
    """configs/stage2.yaml extends stage1.yaml: the paper's stage-2 values (lr, batch, the SPMS columns,
    the prompt captions, the init) are its own, and a value they share (weight_decay) changed once in
    stage1.yaml changes both."""
    import shutil

    import yaml

    from pipelines import config as options

    s1, s2 = load_config("stage1"), load_config("stage2")
    assert (s2.stage, s2.train.lr, s2.train.global_batch_size, s2.data.image_column) == (2, 1e-5, 256, "target_image")
    assert (s1.train.lr, s1.train.global_batch_size, s1.data.image_column) == (2e-5, 512, "image")
    assert s2.train.weight_decay == s1.train.weight_decay == 0.01 and str(s2.model.init) == "runs/stage1/final"
    assert load_config("stage2", CONFIGS / "stage2.yaml") == s2, "a copy of the file, extends line and all, is a config"
    mistaken = tmp_path / "s1.yaml"
    mistaken.write_text("extends: stage2\n")
    with pytest.raises(ConfigError, match="s1.yaml: extends: 'stage2'"):
        load_config("stage1", mistaken)
    configs = tmp_path / "configs"
    shutil.copytree(options.CONFIG_DIR, configs)
    stage1 = yaml.safe_load((configs / "stage1.yaml").read_text())
    stage1["train"]["weight_decay"] = 0.05
    (configs / "stage1.yaml").write_text(yaml.safe_dump(stage1))
    monkeypatch.setattr(options, "CONFIG_DIR", configs)
    monkeypatch.setattr(options, "_PACKAGED", {})
    assert load_config("stage1").train.weight_decay == load_config("stage2").train.weight_decay == 0.05
