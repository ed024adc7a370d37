"""Typed stage options: every stage declares its options once; its values come from the packaged
YAML only; a wrong key, kind, choice or range is refused with the key's path, before any work."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from curation.caption_stage import CaptionStage
from curation.faces import FaceStage
from curation.nsfw import NSFWStage
from curation.options import ConfigError
from curation.quality import QualityStage
from curation.watermark import WatermarkStage
from pipelines.curate import run_curate
from pipelines.job import SourceSpec
from synth.face_swap import FaceSwapStage
from synth.generate import GenerateStage, generate_cfg
from synth.id_filter import IDFilterStage
from synth.postprocess import PostprocessStage

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _yaml(name):
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def _fields(cls):
    return {f.name for f in dataclasses.fields(cls.Options)}


def _named(blocks, name):
    return next(b for b in blocks if b["name"] == name)


BLOCKS = {  # each stage and its block in the packaged YAML, where its values live
    FaceStage: lambda: _named(_yaml("curate")["stages"], "faces"),
    NSFWStage: lambda: _named(_yaml("curate")["stages"], "nsfw"),
    WatermarkStage: lambda: _named(_yaml("curate")["stages"], "watermark"),
    QualityStage: lambda: QualityStage.block(_yaml("curate")),
    IDFilterStage: lambda: _yaml("synth")["id_filter"],
    FaceSwapStage: lambda: _yaml("synth")["face_swap"],
    PostprocessStage: lambda: _yaml("synth")["postprocess"],
    GenerateStage: lambda: generate_cfg(_yaml("synth")),
}


@pytest.mark.parametrize("cls", list(BLOCKS), ids=lambda c: c.name)
def test_each_stage_declares_exactly_the_options_its_yaml_block_documents(cls):
    block = BLOCKS[cls]()
    assert set(block) - {"name", "resources"} == _fields(cls), "a YAML key without a declaration, or the reverse"
    stage = cls({})  # nothing given: every value comes from the YAML block
    for key, value in block.items():
        if key not in ("name", "resources") and not isinstance(value, (dict, list)):
            assert getattr(stage.opts, key) == value, f"{cls.name}.{key}: the default is the YAML's"
    for cap in _yaml("caption")["captioners"]:
        assert set(cap) - {"name", "resources"} <= _fields(CaptionStage)


def test_a_partial_stage_block_keeps_the_other_yaml_defaults():
    """A user's `stages:` list replaces the default list; each block still gets its stage's defaults."""
    doc = _named(_yaml("curate")["stages"], "faces")
    stage = FaceStage({"backend": "dlib", "min_face_px": 120})
    assert stage.opts.min_face_px == 120 and stage.opts.min_face_ratio == doc["min_face_ratio"]
    assert stage.opts.dlib.det_side == doc["dlib"]["det_side"]
    assert stage.resources.batch_size == doc["resources"]["batch_size"]


@pytest.mark.parametrize("cls,given,message", [
    (FaceStage, {"min_face_ratio": 7}, r"\(faces\)\.min_face_ratio: 7 is out of range 0\.\.1"),
    (FaceStage, {"dlib": {"detector": "mmod"}}, r"dlib\.detector: 'mmod' is not one of 'hog', 'cnn'"),
    (NSFWStage, {"backend": "nudnet"}, r"backend: 'nudnet' is not one of 'nudenet', 'transformers'"),
    (NSFWStage, {"threshhold": 0.3}, r"unknown key 'threshhold' \(did you mean 'threshold'\?\)"),
    (WatermarkStage, {"ocr": {"det_sid": 900}}, r"ocr: unknown key 'det_sid' \(did you mean 'det_side'\?\)"),
    (WatermarkStage, {"ocr": {"rules": {"vocabulary": 2}}}, r"ocr\.rules\.vocabulary: 2 is out of range 0\.\.1"),
    (QualityStage, {"filters": {"min_blur": "1e-4"}}, r"filters\.min_blur: expected a number, got '1e-4' \(YAML"),
    (QualityStage, {"filters": {"aspect": [2.0, 0.5]}}, r"aspect: \[2\.0, 0\.5\] has its lower bound above"),
    (QualityStage, {"filters": {"aspect": [0.5]}}, r"aspect: expected a list of 2 values"),
    (IDFilterStage, {"max_abs_yaw": "45"}, r"max_abs_yaw: expected a number, got '45'"),
    (IDFilterStage, {"aesthetic": {"min_score": -3}}, r"aesthetic\.min_score: -3 is out of range"),
    (GenerateStage, {"steps": 0}, r"steps: 0 is out of range 1\.\.inf"),
    (GenerateStage, {"offload": "cpu"}, r"offload: 'cpu' is not one of 'none', 'model', 'low_vram', 'sequential'"),
    (GenerateStage, {"loras": [{"path": "a.safetensors", "weigth": 0.8}]}, r"loras\[0\]: unknown key 'weigth'"),
    (FaceSwapStage, {"backend": "simswap"}, r"'simswap' is not one of 'none', 'inswapper'"),
    (CaptionStage, {"name": "blip2", "instruction": "Describe"}, r"instruction not used by the blip2 backend"),
])
def test_a_wrong_option_is_refused_naming_its_key(cls, given, message):
    with pytest.raises(ConfigError, match=message):
        cls(given)


def test_the_curate_job_refuses_a_bad_stage_option_before_touching_its_output(tmp_path):
    cfg = yaml.safe_load((CONFIGS / "curate.yaml").read_text())
    cfg["stages"] = [{"name": "faces", "min_face_px": -10}]
    with pytest.raises(ConfigError, match=r"min_face_px: -10 is out of range 0\.\.inf"):
        run_curate([SourceSpec("folder", "photos", str(tmp_path))], tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists(), "no output folder, no Ray: the check comes first"


def test_training_options_are_checked_before_ray_starts():
    from pipelines.config import load_config, merge
    from pipelines.train.loop import check_train

    cfg = load_config("stage1")
    check_train(cfg)  # the paper's values pass
    check_train(load_config("stage2"))
    with pytest.raises(ConfigError, match=r"train\.lr: -0\.1 is out of range 0\.\.1"):
        check_train(merge(cfg, {"train": {"lr": -0.1}}))
    with pytest.raises(ConfigError, match=r"train\.optimizer: 'adam' is not one of 'adamw', 'adamw_8bit'"):
        check_train(merge(cfg, {"train": {"optimizer": "adam"}}))
    with pytest.raises(ValueError, match=r"global_batch_size 512 must be micro_batch_size 1 x a multiple of the 3"):
        check_train(merge(cfg, {"ray": {"num_workers": 3}}))
