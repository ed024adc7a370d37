"""SPMS synthesis: prompt banks and gender pairing, the ID filter on real photos, the
inswapper backend up to its ONNX session, and the Ray job end to end with the tiny InfU."""
from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import samples
from curation.engine import ALIVE
from curation.records import stable_id
from curation.registry import empty_row
from curation.registry import spss_schema
from infu_model.faces import make_face_analyzer
from infu_model.images import decode
from pipelines.config import merge
from pipelines.jobs import load_config
from stages import synth_stage
from synth.prompts import PromptBankError, load_prompts
from synth.records import SPMS_SCHEMA, SYNTH_ROW_SCHEMA, encode
import tiny_onnx

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def pixels(data: bytes):
    return decode(data).rgb


def spss_row(img, path: str, gender=None, identity=None) -> dict:
    """An SPSS record of a real photo, with its face fields from the offline dlib backend."""
    faces = make_face_analyzer({"backend": "dlib"})
    rgb = np.asarray(img.convert("RGB"))
    f = faces.detect(rgb)[0]
    r = {k: v for k, v in empty_row().items() if not k.startswith("_")}
    r.update(id=stable_id("photos", path), source="photos", path=path, frame=-1, identity=identity, gender=gender,
             image=samples.png_bytes(img), image_format="png", width=img.width, height=img.height,
             bucket=f"{img.width}x{img.height}", bbox=f.bbox.tolist(), kps=f.kps.tolist(),
             id_embedding=faces.embed(rgb, f).tolist(), id_backend=faces.name, status="kept")
    return r


@pytest.fixture(scope="module")
def spss_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("spss")
    rows = [spss_row(samples.grace_hopper(), "grace.png", gender="female", identity="hopper"),
            spss_row(samples.astronaut(), "astronaut.png")]
    (d / "kept").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=spss_schema()), d / "kept" / "part-0.parquet")
    return d


# ------------------------------------------------------------- prompts ---
def test_prompt_banks_are_valid_disjoint_and_cover_the_axes():
    bench, bank = load_prompts(CONFIGS / "prompts" / "benchmark.yaml"), load_prompts(CONFIGS / "prompts" / "synth.yaml")
    assert len(bench) == 200 and len({p.text for p in bench}) == 200
    assert not {p.text for p in bench} & {p.text for p in bank}, "never fine-tune on benchmark prompts"
    for prompts in (bench, bank):
        assert {p.gender for p in prompts} == {"female", "male", "any"}
        for axis, want in (("length", 3), ("face_size", 3), ("view", 5), ("scene", 5), ("age", 5), ("complexity", 2)):
            assert len({p.tags[axis] for p in prompts}) >= want, axis


@pytest.mark.parametrize("text, error", [
    ("prompts:\n- {text: a person smiling}\n- {text: A person  smiling}\n", "duplicate"),
    ("prompts:\n- {text: a person smiling, gender: woman}\n", "gender"),
    ("prompts:\n- {text: a man in a suit, gender: any}\n", "says 'man'"),
    ("prompts:\n- {text: a woman with his dog, gender: female}\n", "says 'his'"),
])
def test_bad_prompt_banks_fail_with_the_entry_named(tmp_path, text, error):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(PromptBankError, match=error):
        load_prompts(f)


def test_text_prompt_files_take_gender_tags(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# my prompts\nfemale\ta woman reading\na person at the beach\nmale\ta man cooking\n")
    assert [(p.gender, p.text) for p in load_prompts(f)] == [
        ("female", "a woman reading"), ("any", "a person at the beach"), ("male", "a man cooking")]


def _planner(gender=None, **prompts):
    """The synth job's planner over the packaged bank, 20 prompts x 2 seeds per source unless told."""
    over = {"seed": 0, "prompts": {"file": str(CONFIGS / "prompts" / "synth.yaml"), "per_source": 20,
                                   "seeds_per_prompt": 2, **prompts}}
    return load_config("synth", overrides={**over, **({"gender": gender} if gender else {})}).planner()


def test_gender_pairing_never_gives_a_gendered_prompt_to_the_other_gender():
    planner = _planner()
    genders = {p.id: p.gender for p in planner.prompts}
    rng = random.Random(0)
    sources = [{"id": f"s{i}", "gender": rng.choice(["female", "male", "F", "M", None, "unknown"])} for i in range(300)]
    jobs = planner.expand(sources)
    want = {"female": "female", "F": "female", "male": "male", "M": "male", None: None, "unknown": None}
    by_id = {s["id"]: want[s["gender"]] for s in sources}
    assert len(jobs) == 300 * 20 * 2
    for j in jobs:
        g = genders[j["prompt_id"]]
        assert g == "any" or g == by_id[j["source_id"]], (j["prompt"], by_id[j["source_id"]])
    assert {genders[j["prompt_id"]] for j in jobs if by_id[j["source_id"]] is None} == {"any"}
    # the plan is a pure function of the config: a rerun plans the same pairs and skips the done ones
    again = planner.expand(sources, frozenset(j["pair_id"] for j in jobs[:100]))
    assert [j["pair_id"] for j in again] == [j["pair_id"] for j in jobs[100:]]
    assert len({j["pair_id"] for j in jobs}) == len(jobs)


def test_unlabelled_sources_use_the_gender_classifier(tmp_path):
    model = tiny_onnx.genderage(tmp_path / "genderage.onnx", male=True)
    planner = _planner(gender={"backend": "insightface_genderage", "model": str(model)}, per_source=None)
    planner.setup()
    src = spss_row(samples.astronaut(), "a.png")
    jobs = planner.expand([src])
    assert {j["gender"] for j in jobs} == {"male"} and {j["gender_from"] for j in jobs} == {"classifier"}
    genders = {p.id: p.gender for p in planner.prompts}
    assert {genders[j["prompt_id"]] for j in jobs} == {"male", "any"}
    assert len(jobs) == 2 * sum(p.gender in ("male", "any") for p in planner.prompts)
    labelled = planner.expand([{**src, "gender": "female"}])  # a dataset label wins over the classifier
    assert {j["gender_from"] for j in labelled} == {"label"}


def test_a_source_no_prompt_fits_is_rejected_not_lost(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("prompts:\n- {text: a woman reading, gender: female}\n")
    jobs = _planner(file=str(f)).expand([{"id": "x", "gender": None}])
    assert [(j["status"], j["reason"]) for j in jobs] == [("rejected", "no_fitting_prompts")]


# ----------------------------------------------------------- ID filter ---
def _pair(source: dict, target_img) -> dict:
    r = {f.name: None for f in SYNTH_ROW_SCHEMA}
    r.update(pair_id=stable_id("pair", str(id(target_img))), source_id=source["id"], status=ALIVE, prompt="a photo",
             target_image=encode(target_img), image_format="png", width=target_img.width, height=target_img.height,
             _source_image=source["image"], _source_kps=source["kps"], _source_bbox=source["bbox"],
             _source_embedding=source["id_embedding"], _source_backend=source["id_backend"])
    return r


def test_id_filter_keeps_the_same_person_and_rejects_others():
    from curation.engine import run_stage

    grace = samples.grace_hopper()
    source = spss_row(grace, "g.png")
    # the same person in a new picture: smaller, on a bigger canvas, mirrored
    canvas = samples.small_face_canvas(grace.transpose(0), canvas=900, size=420)
    rows = [_pair(source, canvas), _pair(source, samples.astronaut()), _pair(source, samples.group()),
            _pair(source, samples.cat())]
    run_stage(synth_stage("id_filter", faces={"backend": "dlib"}), rows)
    same, other, group, cat = rows
    assert same["status"] == ALIVE and same["id_distance"] < 0.5, same["id_distance"]
    assert same["target_kps"] is not None and same["face_count"] == 1 and same["phash"]
    assert (other["status"], other["reason"]) == ("rejected", "low_id_similarity") and other["id_distance"] > 0.6
    assert (group["status"], group["reason"]) == ("rejected", "multiple_faces")
    assert (cat["status"], cat["reason"]) == ("rejected", "no_face")
    strict = _pair(source, canvas)
    run_stage(synth_stage("id_filter", faces={"backend": "dlib"}, max_abs_yaw=0.1), [strict])
    assert strict["reason"] == "extreme_pose" and strict["id_distance"] < 0.5


def test_kept_pairs_are_stage2_training_samples():
    """What synth writes is what stage-2 training reads (target, its keypoints, source identity, prompt)."""
    from curation.engine import run_stage
    from pipelines.sink import conform
    from infu_model.train_data import prepare

    source = spss_row(samples.grace_hopper(), "g.png")
    row = _pair(source, samples.small_face_canvas(samples.grace_hopper(), canvas=700, size=420))
    row.update(source_id_embedding=source["id_embedding"], id_backend=source["id_backend"], bucket="700x700",
               captions=[{"source": "prompt", "text": "a photo"}])
    run_stage(synth_stage("id_filter", faces={"backend": "dlib"}), [row])
    assert row["status"] == ALIVE
    row["status"] = "kept"
    stored = conform(pa.Table.from_pylist([row], schema=SYNTH_ROW_SCHEMA), SPMS_SCHEMA).to_pylist()[0]
    data = replace(load_config("stage2").data, black_control_prob=0.0, caption_dropout=0.0)
    sample = prepare(stored, data, 128, (64, 64), random.Random(0))
    assert sample["caption"] == "a photo" and sample["id"] == row["pair_id"] and not sample["black"]
    assert np.asarray(sample["control"]).any() and sample["emb"].shape == (128,)


# ---------------------------------------------------------- face swap ---
class Recorder:
    """Wraps an onnxruntime session and keeps what it was fed."""

    def __init__(self, session):
        self.session, self.feeds = session, []

    def run(self, names, feed):
        self.feeds.append({k: v.copy() for k, v in feed.items()})
        return self.session.run(names, feed)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_inswapper_aligns_maps_the_embedding_and_pastes_back_under_a_mask(tmp_path):
    from insightface.utils import face_align


    model, emap = tiny_onnx.inswapper(tmp_path / "inswapper_128.onnx")
    rec = tiny_onnx.recognition(tmp_path / "w600k_r50.onnx")
    source = spss_row(samples.astronaut(), "a.png")
    target_img = samples.small_face_canvas(samples.grace_hopper(), canvas=800, size=400)
    row = _pair(source, target_img)
    stage = synth_stage("face_swap", backend="inswapper", model=str(model), recognition=str(rec),
                        faces={"backend": "dlib"})
    stage.ensure_setup()
    sw = stage.swapper
    sw.swapper.session = Recorder(sw.swapper.session)
    stage.process([row])
    assert row["face_swap"] == "inswapper_128"
    feed = sw.swapper.session.feeds[0]
    # embedding mapping: the source's normalised ArcFace embedding through emap, normalised again
    emb = sw.source_embedding(pixels(source["image"]), source["kps"])
    assert np.isclose(np.linalg.norm(emb), 1.0, atol=1e-5)
    latent = emb[None] @ emap
    np.testing.assert_allclose(feed[sw.swapper.input_names[1]], latent / np.linalg.norm(latent), rtol=1e-4, atol=1e-6)
    # alignment: the target crop is insightface's 128-px arcface alignment of the detected keypoints, RGB / 255
    rgb = np.asarray(target_img)
    kps = make_face_analyzer({"backend": "dlib"}).detect(rgb)[0].kps
    crop, _ = face_align.norm_crop2(np.ascontiguousarray(rgb[:, :, ::-1]), kps, 128)
    np.testing.assert_allclose(feed[sw.swapper.input_names[0]][0], crop[:, :, ::-1].transpose(2, 0, 1) / 255.0,
                               atol=1e-6)
    # paste-back: the face changed, the picture far from it did not
    out = pixels(row["target_image"]).astype(int)
    x1, y1, x2, y2 = kps[:, 0].min(), kps[:, 1].min(), kps[:, 0].max(), kps[:, 1].max()
    face = out[int(y1):int(y2), int(x1):int(x2)] - rgb[int(y1):int(y2), int(x1):int(x2)]
    assert np.abs(face).mean() > 5
    assert np.array_equal(out[:40], rgb[:40]) and np.array_equal(out[-40:], rgb[-40:])


def test_missing_swap_models_name_their_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="inswapper_128.onnx"):
        synth_stage("face_swap", backend="inswapper", model=str(tmp_path / "inswapper_128.onnx"),
                    recognition=str(tmp_path / "r.onnx")).setup()


# ------------------------------------------------------------ the job ---
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from infu_model.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


def synth_cfg(tiny, **over):
    return load_config("synth", overrides=merge({
        "progress": False, "model": {"base": str(tiny["base"]), "path": str(tiny["infu"]), "dtype": "float32"},
        "generation": {"width": 64, "height": 64, "steps": 3, "images_per_call": 2},
        "prompts": {"per_source": 2, "seeds_per_prompt": 2}, "output": {"rows_per_file": 3}}, over))


def report_text(out):
    from pipelines.report import write_report

    return write_report(out).read_text()


def test_synth_job_generates_every_planned_pair_accounts_for_it_and_resumes(ray_local, tiny, spss_dir, tmp_path):
    from pipelines.synth import run_synth

    out = tmp_path / "spms"
    stats = run_synth(spss_dir, out, synth_cfg(tiny), log=lambda m: None)
    assert stats["pairs_planned"] == 8 and stats["pairs"] == 8 and stats["written_this_run"] == 8
    assert stats["adds_up"] and stats["sources_unaccounted"] == 0 and stats["kept"] == 0, "all rejected adds up"
    rows = pa.concat_tables([pq.read_table(f) for f in sorted((out / "rejected").glob("*.parquet"))]).to_pylist()
    assert len(rows) == 8 and {r["reason"] for r in rows} <= {"no_face", "low_id_similarity", "extreme_pose"}
    assert sum(stats["by_reason"].values()) == 8 and {"source_no_face", "multiple_faces", "low_id_similarity",
                                                       "extreme_pose", "duplicate"} <= set(stats["by_reason"]), \
        "every reason a stage that ran may give is listed, zero counts included"
    for r in rows:  # the tiny random model draws no face; every target is still there, with its settings
        assert pixels(r["target_image"]).shape == (64, 64, 3)
        assert r["captions"] == [{"source": "prompt", "text": r["prompt"]}] and r["model"].endswith(":sim_stage1")
        assert json.loads(r["settings"])["steps"] == 3 and r["source_id_embedding"] and r["id_backend"]
    assert {r["gender_from"] for r in rows} == {"label", None}
    page = report_text(out)  # each target beside its real source photo; acceptance per prompt axis
    assert page.count('<div class="pair">') == 8 and page.count("source</figcaption>") == 8
    assert "Acceptance per prompt axis" in page and "no image" not in page
    # resume: nothing left to do; then lose one output file and only its pairs come back, identical
    assert run_synth(spss_dir, out, synth_cfg(tiny), log=lambda m: None)["written_this_run"] == 0
    victim = sorted((out / "rejected").glob("*.parquet"))[0]
    lost = {r["pair_id"]: r["target_image"] for r in pq.read_table(victim).to_pylist()}
    victim.unlink()
    again = run_synth(spss_dir, out, synth_cfg(tiny), log=lambda m: None)
    assert again["written_this_run"] == len(lost) and again["adds_up"] and again["pairs"] == 8
    back = pa.concat_tables([pq.read_table(f) for f in (out / "rejected").glob("*.parquet")]).to_pylist()
    assert {r["pair_id"]: r["target_image"] for r in back if r["pair_id"] in lost} == lost
    from pipelines.job import ConfigMismatch

    with pytest.raises(ConfigMismatch):  # a changed config on the same output is refused before any work
        run_synth(spss_dir, out, synth_cfg(tiny, generation={"steps": 4}), log=lambda m: None)


def test_source_selection_is_a_stable_sample_with_caps(tmp_path):
    from pipelines.synth import SelectOptions, select_sources

    rows = [{**{f.name: None for f in spss_schema()}, "id": f"r{i}", "source": "s", "path": f"{i}", "frame": -1,
             "status": "kept", "identity": f"p{i % 5}"} for i in range(200)]
    f = tmp_path / "part.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=spss_schema()), f)
    def pick(fraction=1.0, per_identity=None, max_sources=None):
        return select_sources([str(f)], SelectOptions(fraction, per_identity, max_sources), seed=0).to_pylist()

    half = pick(0.5)
    assert 70 < len(half) < 130 and half == pick(0.5)
    assert set(pick(0.25)) <= set(half)  # nested samples
    two_each = pick(per_identity=2)
    assert len(two_each) == 10 and {int(i[1:]) % 5 for i in two_each} == set(range(5))
    assert len(pick(max_sources=7)) == 7


def mirror_hook(image, row, border: int = 0):
    """A post-processing hook for the test: mirror the target and pad it."""
    from PIL import ImageOps

    return ImageOps.expand(ImageOps.mirror(image), border=border)


def test_postprocess_hook_runs_on_every_target():
    from curation.engine import run_stage

    source = {"id": "s", "image": None, "kps": None, "bbox": None, "id_embedding": None, "id_backend": None}
    img = samples.astronaut().resize((64, 48))
    row = _pair(source, img)
    run_stage(synth_stage("postprocess", hook="test_synth:mirror_hook", args={"border": 2}), [row])
    out = pixels(row["target_image"])
    assert out.shape == (52, 68, 3) and (row["width"], row["height"], row["bucket"]) == (68, 52, "68x52")
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.asarray(img)[:, ::-1])
    with pytest.raises(ValueError, match="package.module:function"):
        synth_stage("postprocess", hook="no_colon")


def test_aesthetic_head_scores_and_filters(tmp_path):
    import torch
    from safetensors.torch import save_file

    from curation.engine import run_stage
    from infu_model.scoring import AestheticScorer
    from tiny_clip import make_tiny_clip

    clip, _ = make_tiny_clip(tmp_path / "clip")
    g = torch.Generator().manual_seed(0)
    head = {"layers.0.weight": torch.randn(8, 16, generator=g), "layers.0.bias": torch.randn(8, generator=g),
            "layers.2.weight": torch.randn(1, 8, generator=g), "layers.2.bias": torch.tensor([5.0])}
    save_file(head, str(tmp_path / "head.safetensors"))
    scorer = AestheticScorer(clip, tmp_path / "head.safetensors")
    photo = samples.grace_hopper()
    emb = torch.from_numpy(scorer.clip.images([photo]))
    want = (emb @ head["layers.0.weight"].T + head["layers.0.bias"]) @ head["layers.2.weight"].T + head["layers.2.bias"]
    assert scorer([photo])[0] == pytest.approx(float(want[0, 0]), rel=1e-5)
    source = spss_row(photo, "g.png")
    target = samples.small_face_canvas(photo.transpose(0), canvas=700, size=420)
    aesthetic = {"clip": str(clip), "head": str(tmp_path / "head.safetensors")}
    rows = [_pair(source, target), _pair(source, target)]
    run_stage(synth_stage("id_filter", faces={"backend": "dlib"}, aesthetic=aesthetic), rows[:1])
    score = rows[0]["aesthetic"]
    assert rows[0]["status"] == ALIVE and score is not None
    run_stage(synth_stage("id_filter", faces={"backend": "dlib"}, aesthetic={**aesthetic, "min_score": score + 1}),
              rows[1:])
    assert rows[1]["reason"] == "low_aesthetic" and rows[1]["aesthetic"] == pytest.approx(score)


def test_generation_rejects_faceless_sources_and_quarantines_corrupt_ones(tiny):
    from curation.engine import run_stage

    good = spss_row(samples.grace_hopper(), "g.png")
    cat = {**good, "id": "cat", "image": samples.jpeg_bytes(samples.cat()), "id_embedding": None}
    broken = {**good, "id": "broken", "image": b"\x89PNG\r\n\x1a\n truncated", "id_embedding": None}
    planner = _planner(per_source=1, seeds_per_prompt=1)
    rows = planner.expand([good, cat, broken])
    stage = synth_cfg(tiny).generate
    run_stage(stage, rows)
    by = {r["source_id"]: r for r in rows}
    assert by[good["id"]]["status"] == ALIVE and pixels(by[good["id"]]["target_image"]).shape == (64, 64, 3)
    assert (by["cat"]["status"], by["cat"]["reason"]) == ("rejected", "source_no_face")
    assert (by["broken"]["status"], by["broken"]["reason"]) == ("quarantined", "generate_error")
    assert by["broken"]["error"]


def test_pools_that_would_starve_ray_data_are_refused(ray_local, tiny, spss_dir, tmp_path):
    from pipelines.synth import run_synth

    cfg = synth_cfg(tiny, id_filter={"resources": {"num_cpus": 1.0}})  # 0.5 + 1.0 of 2 CPUs: no slot left to read
    with pytest.raises(ValueError, match=r"\(generate 0.5 x 1, id_filter 1 x 1\) ask for 1.5 of the cluster's 2 CPUs"):
        run_synth(spss_dir, tmp_path / "o", cfg, log=lambda m: None)
