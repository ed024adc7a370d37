"""Evaluation: metric functions on hand-made embeddings, the benchmark file, the harness end
to end with a tiny InfU and tiny CLIP/PickScore models, resume, and --compare."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from curation import samples
from infu_model.images import open_rgb
from infu_model.metrics import copy_paste_angle, copy_paste_index, cosine, id_loss, match_faces, paired_bootstrap, sim_gt
from pipelines.config import merge
from pipelines.jobs import load_config
from synth.prompts import GENDERS, load_prompts
from tiny_clip import make_tiny_clip

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def unit(deg: float) -> np.ndarray:
    return np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0])


def test_id_loss_and_copy_paste_index_on_known_cosines():
    ref, gen = unit(0), unit(60)
    assert id_loss(gen, ref)[0] == pytest.approx(0.5)
    assert id_loss(3 * ref, ref)[0] == pytest.approx(0.0)  # scale-free
    # a paste of the reference: perfect match to it, only cos 0 to another photo of the person
    assert copy_paste_index(ref, ref, [unit(90)]) == pytest.approx(1.0)
    # a rendering of the person: as close to the held-out photos as to the reference
    assert copy_paste_index(unit(30), ref, [unit(60)]) == pytest.approx(0.0, abs=1e-12)
    # 60 deg from the reference, 30 deg from each held-out photo (at 90 and 30 deg)
    assert copy_paste_index(gen, ref, [unit(90), unit(30)]) == pytest.approx(0.5 - math.cos(math.radians(30)))
    np.testing.assert_allclose(cosine([ref, gen], [gen, gen]), [0.5, 1.0])
    with pytest.raises(ValueError):
        copy_paste_index(gen, ref, [])


def test_multiid_bench_metrics_on_known_angles():
    """Sim(GT), and the angular copy-paste score: 1 for a paste of the reference, -1 for the ground truth
    itself, 0 halfway between, always within [-1, 1]."""
    ref, gt = unit(0), unit(90)
    assert sim_gt(unit(30), [unit(60), unit(0)]) == pytest.approx(math.cos(math.radians(30)))
    assert copy_paste_angle(ref, ref, [gt]) == pytest.approx(1.0)
    assert copy_paste_angle(gt, ref, [gt]) == pytest.approx(-1.0)
    assert copy_paste_angle(unit(45), ref, [gt]) == pytest.approx(0.0, abs=1e-12)
    assert copy_paste_angle(unit(30), ref, [gt, unit(60)]) == pytest.approx(((60 - 30) / 90 + (30 - 30) / 60) / 2)
    # off the plane of the reference and the ground truth: still within [-1, 1] (the angle is a metric)
    rng = np.random.default_rng(0)
    g, r, t = rng.normal(size=(3, 200, 512))
    scores = [copy_paste_angle(g[i], r[i], [t[i]]) for i in range(200)]
    assert min(scores) >= -1 and max(scores) <= 1 and np.std(scores) > 0.01
    assert copy_paste_angle(unit(10), ref, [ref, gt]) == pytest.approx(copy_paste_angle(unit(10), ref, [gt]))
    with pytest.raises(ValueError, match="other than the reference"):
        copy_paste_angle(unit(10), ref, [ref])
    with pytest.raises(ValueError):
        sim_gt(unit(10), [])


def test_faces_are_matched_to_identities_as_a_whole_not_greedily():
    # A at 0 deg, B at 30; face 0 at 14 deg is nearest A, but giving it A leaves face 1 (at -40) the far B:
    # the assignment that is best as a whole gives face 0 to B and face 1 to A
    ids, faces = [unit(0), unit(30)], [unit(14), unit(-40)]
    assert sorted(match_faces(faces, ids)) == [(0, 1), (1, 0)]
    assert match_faces([unit(88), unit(2), unit(45)], ids[:1]) == [(1, 0)]   # a crowd: the face like the identity
    assert match_faces([unit(5)], ids) == [(0, 0)]                             # an identity the image lacks
    assert match_faces([], ids) == []


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    a = rng.normal(0.3, 0.05, 400)
    same = paired_bootstrap(a, a + 0.02, samples=2000)
    assert same["diff"] == pytest.approx(0.02) and same["ci_low"] == pytest.approx(0.02)
    noisy = paired_bootstrap(a, a + rng.normal(0.01, 0.05, 400), samples=2000)
    assert noisy["ci_low"] < noisy["diff"] < noisy["ci_high"] and noisy["n"] == 400
    assert noisy["ci_high"] - noisy["ci_low"] == pytest.approx(2 * 1.96 * 0.05 / 20, rel=0.25)
    assert paired_bootstrap([], [])["diff"] is None


def test_benchmark_has_200_unique_gender_tagged_prompts():
    prompts = load_prompts(CONFIGS / "prompts" / "benchmark.yaml")
    assert len(prompts) == 200 and all(p.gender in GENDERS for p in prompts)
    assert len({p.text.lower() for p in prompts}) == 200 and len({p.id for p in prompts}) == 200


# ---------------------------------------------------------------- harness ---
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from infu_model.tiny import make_tiny

    d = tmp_path_factory.mktemp("models")
    tiny = make_tiny(d / "tiny")
    clip, _ = make_tiny_clip(d / "clip", seed=0)
    pick, pick_proc = make_tiny_clip(d / "pick", seed=1, processor_apart=True)
    return {**tiny, "clip": clip, "pick": pick, "pick_proc": pick_proc}


@pytest.fixture(scope="module")
def ids_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ids")
    grace = samples.grace_hopper()
    grace.save(d / "grace.png")
    samples.small_face_canvas(grace.transpose(0), canvas=700, size=400).save(d / "grace_held_out.png")
    samples.astronaut().save(d / "astronaut.png")
    (d / "ids.yaml").write_text(yaml.safe_dump({"identities": [
        {"name": "grace", "gender": "female", "reference": "grace.png", "held_out": ["grace_held_out.png"]},
        {"name": "eileen", "reference": "astronaut.png"}]}))
    return d


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("bench") / "bench.yaml"
    f.write_text(yaml.safe_dump({"prompts": [
        {"id": "w1", "gender": "female", "text": "a woman reading in a library", "tags": {"length": "short"}},
        {"id": "m1", "gender": "male", "text": "a man on a boat", "tags": {"length": "short"}},
        {"id": "a1", "gender": "any", "text": "a person on a rainy street at night", "tags": {"length": "medium"}},
        {"id": "a2", "gender": "any", "text": "a close-up portrait of a person", "tags": {"length": "short"}}]}))
    return f


def eval_cfg(models, bench_file, **over):
    return load_config("eval", overrides=merge({
        "progress": False, "benchmark": str(bench_file), "label": "tiny",
        "model": {"base": str(models["base"]), "path": str(models["infu"]), "dtype": "float32"},
        "generation": {"width": 64, "height": 64, "steps": 2},
        "id_metric": {"faces": {"backend": "dlib"}},
        "clipscore": {"model": str(models["clip"]), "device": "cpu"},
        "pickscore": {"model": str(models["pick"]), "processor": str(models["pick_proc"]), "device": "cpu"},
        "bootstrap": {"samples": 500}}, over))


def test_eval_runs_end_to_end_resumes_and_its_summary_is_the_parquet(ray_local, models, ids_dir, bench_file, tmp_path,
                                                                    monkeypatch):
    import pipelines.eval
    from pipelines.eval import run_eval
    from pipelines.job import claim_output

    decoded = []  # the identity photos the driver decodes: each once (checked, then scored from that)
    monkeypatch.setattr(pipelines.eval, "open_rgb", lambda p, _f=pipelines.eval.open_rgb: decoded.append(p) or _f(p))

    with claim_output(tmp_path / "res", "eval") as claim:  # (an earlier run's folder)
        out = claim.out
    # an interrupted earlier run "generated" two items: real photos of grace, so the face metrics meet real faces
    for name, img in (("w1", samples.small_face_canvas(samples.grace_hopper(), canvas=600, size=380)),
                      ("a1", samples.astronaut())):
        seed = [it for it in _items(models, ids_dir, bench_file) if it["prompt_id"] == name][0]["seed"]
        (out / "images" / "grace").mkdir(parents=True, exist_ok=True)
        img.save(out / "images" / "grace" / f"{name}_{seed}.png")
    logs = []
    s = run_eval(ids_dir, out, eval_cfg(models, bench_file), log=logs.append)
    # grace: w1 a1 a2; eileen (no gender): a1 a2; one InfU actor on this CPU-only cluster
    assert logs == ["eval: generating 3 of 5 images", "actor pools: generate 1 x (0.5 CPU)"]
    photos = [p for p in decoded if Path(p).is_relative_to(ids_dir)]
    assert photos and len(photos) == len(set(photos)), "each identity photo is decoded once"
    t = pq.read_table(out / "scores.parquet").to_pylist()
    assert sorted((r["identity"], r["prompt_id"]) for r in t) == [
        ("eileen", "a1"), ("eileen", "a2"), ("grace", "a1"), ("grace", "a2"), ("grace", "w1")]
    by = {(r["identity"], r["prompt_id"]): r for r in t}
    same, other = by[("grace", "w1")], by[("grace", "a1")]
    assert same["face_found"] and other["face_found"] and same["id_loss"] < other["id_loss"]
    assert same["copy_paste"] is not None and by[("eileen", "a1")]["copy_paste"] is None  # no held-out photo
    for r in t:  # MultiID-Bench's metrics where there is ground truth (held-out photos) and a face
        has = r["identity"] == "grace" and r["face_found"]
        assert (r["sim_gt"] is not None) == has and (r["copy_paste_angle"] is not None) == has
        assert r["copy_paste_angle"] is None or -1 <= r["copy_paste_angle"] <= 1
        assert r["faces"] >= int(r["face_found"])
    for r in t:
        if not r["face_found"]:
            assert r["id_loss"] == 2.0  # the configured worst score, counted
    # CLIPScore and PickScore are each image's cosine with its own prompt under the configured CLIP model,
    # computed here from transformers' own features; the same images against other prompts score otherwise
    images, prompts = [open_rgb(out / r["image"]) for r in t], [r["prompt"] for r in t]
    swapped = prompts[1:] + prompts[:1]
    assert prompts != swapped
    for key, model, proc in (("clip_score", models["clip"], models["clip"]),
                             ("pick_score", models["pick"], models["pick_proc"])):
        stored = [r[key] for r in t]
        assert stored == pytest.approx(clip_cosines(model, proc, images, prompts), abs=1e-5), key
        assert stored != pytest.approx(clip_cosines(model, proc, images, swapped), abs=1e-3), key
    # the summary is exactly the per-image Parquet
    for m in ("id_loss", "clip_score", "pick_score", "copy_paste", "sim_gt", "id_similarity", "copy_paste_angle"):
        vals = [r[m] for r in t if r[m] is not None]
        assert s["metrics"][m] == pytest.approx(float(np.mean(vals)))
    assert s["no_face"] == sum(not r["face_found"] for r in t) and s["images"] == s["planned"] == 5
    assert s["by_axis"]["length"]["short"]["n"] == 3
    md = (out / "summary.md").read_text()
    assert ("| Method | ID Loss↓ | CLIPScore↑ | PickScore↑ | Copy-paste↓ | Sim(GT)↑ | Sim(Ref) | CP∠↓ | No face |"
            in md and "| tiny |" in md)
    assert json.loads((out / "summary.json").read_text())["metrics"] == s["metrics"]
    assert (out / "grids" / "grace.jpg").is_file() and (out / "grids" / "eileen.jpg").is_file()
    from pipelines.report import write_report

    page = write_report(out).read_text()   # Table 1, per-axis breakdowns, the grids
    assert f"<td>{s['metrics']['id_loss']:.3f}</td>" in page and "by length" in page
    assert "Sim(GT)" in page and f"<td>{s['metrics']['sim_gt']:.3f}</td>" in page
    assert page.count("data:image/jpeg") == 2
    # resume: nothing is generated again; a scorer without weights is reported, its column left empty
    logs.clear()
    s2 = run_eval(ids_dir, out, eval_cfg(models, bench_file, pickscore={"model": None}), log=logs.append)
    assert logs == [] and s2["metrics"]["id_loss"] == pytest.approx(s["metrics"]["id_loss"])
    assert s2["scorers"]["pick_score"]["ran"] is False and s2["metrics"]["pick_score"] is None
    assert "PickScore" in (out / "summary.md").read_text() and "pick_score: not run" in (out / "summary.md").read_text()


def test_a_rerun_that_would_change_the_images_is_refused_and_new_metrics_rescore(ray_local, models, tmp_path):
    """A prompt edited in place, or another seed, is refused in one line naming it and its earlier value
    (the images made so far would mix two settings); another scorer is not: every run scores every image
    again. --overwrite starts over."""
    from pipelines.eval import run_eval
    from pipelines.job import ConfigMismatch

    ids = tmp_path / "ids"
    ids.mkdir()
    samples.grace_hopper().save(ids / "grace.png")
    (ids / "ids.yaml").write_text(yaml.safe_dump({"identities": [{"name": "grace", "reference": "grace.png"}]}))
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump({"prompts": [{"id": "a1", "gender": "any", "text": "a person at night"}]}))
    out = tmp_path / "res"
    first = run_eval(ids, out, eval_cfg(models, bench, pickscore={"model": None}))
    bench.write_text(yaml.safe_dump({"prompts": [{"id": "a1", "gender": "any", "text": "a person at noon"}]}))
    with pytest.raises(ConfigMismatch, match=r"holds an `infu eval` run with other settings \(benchmark \(contents\): "
                                             r"[0-9a-f]{16} then, [0-9a-f]{16} now\).*--overwrite"):
        run_eval(ids, out, eval_cfg(models, bench))
    bench.write_text(yaml.safe_dump({"prompts": [{"id": "a1", "gender": "any", "text": "a person at night"}]}))
    with pytest.raises(ConfigMismatch, match=r"\(seed: 42 then, 7 now\)"):
        run_eval(ids, out, eval_cfg(models, bench, seed=7))
    again = run_eval(ids, out, eval_cfg(models, bench))  # PickScore now configured: scored, nothing generated
    assert again["metrics"]["id_loss"] == first["metrics"]["id_loss"] and again["scorers"]["pick_score"]["ran"]
    over = run_eval(ids, out, eval_cfg(models, bench, seed=7), overwrite=True)
    assert over["images"] == 1 and json.loads((out / "run.json").read_text())["settings"]["seed"] == 7


@pytest.mark.slow
def test_eval_reads_identities_from_a_bucket_and_writes_its_results_into_one_as_on_disk(
        ray_local, models, ids_dir, bench_file, tmp_path, s3_env):
    """`infu eval --ids s3://... --out s3://...`: the same scores and summary as on disk, every result an
    object (images, scores, summary, grids, report); a rerun generates nothing; --compare reads buckets."""
    from pipelines.eval import compare, run_eval
    from pipelines.report import write_report
    from infu_model.storage import ObjectPath, read_parquet

    ids = s3_env.upload(ids_dir, f"{s3_env.bucket('bench')}/ids")
    out = "s3://bench/results/tiny"
    cfg = eval_cfg(models, bench_file)
    on_disk, logs = run_eval(ids_dir, tmp_path / "disk", cfg), []
    in_bucket = run_eval(ids, out, cfg, log=logs.append)
    assert logs[0] == "eval: generating 5 of 5 images"
    key = ["identity", "prompt_id", "seed"]
    disk_rows, bucket_rows = (sorted(read_parquet(f"{d}/scores.parquet").to_pylist(), key=lambda r: [r[k] for k in key])
                              for d in (tmp_path / "disk", out))
    assert [{**r, "image": None} for r in bucket_rows] == [{**r, "image": None} for r in disk_rows]
    assert in_bucket["metrics"] == on_disk["metrics"] and in_bucket["images"] == 5
    write_report(out)
    keys = set(s3_env.keys("bench"))
    assert {"results/tiny/summary.md", "results/tiny/summary.json", "results/tiny/grids/grace.jpg",
            "results/tiny/report.html", "results/tiny/run.json"} <= keys
    assert len([k for k in keys if k.startswith("results/tiny/images/")]) == 5
    assert not [k for k in keys if k.endswith(".tmp")] and "results/tiny/_work/live" not in keys
    logs.clear()
    run_eval(ids, out, cfg, log=logs.append)
    assert logs == [], "a rerun finds every image in the bucket and generates none"
    c = compare(str(tmp_path / "disk"), out, cfg.bootstrap)
    assert c["paired_items"] == 5 and c["metrics"]["id_loss"]["diff"] == pytest.approx(0.0, abs=1e-6)
    assert "| tiny |" in ObjectPath(f"{out}/summary.md").read_text()


def clip_cosines(model_dir, processor_dir, images, texts) -> list[float]:
    """cos(image_i, text_i) under a CLIP model, from transformers' image and text features."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model, proc = CLIPModel.from_pretrained(model_dir).eval(), CLIPProcessor.from_pretrained(processor_dir)
    with torch.no_grad():
        im = model.get_image_features(pixel_values=proc(images=images, return_tensors="pt")["pixel_values"])
        tx = model.get_text_features(**proc.tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))
    im, tx = (torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1) for e in (im, tx))
    return (im * tx).sum(-1).tolist()


def _items(models, ids_dir, bench_file):
    from pipelines.eval import load_identities, plan_items

    cfg = eval_cfg(models, bench_file)
    return plan_items(load_identities(ids_dir), load_prompts(cfg.benchmark), cfg)


def test_identities_from_subfolders(tmp_path):
    from pipelines.eval import load_identities

    (tmp_path / "ann").mkdir()
    for name in ("b.jpg", "reference.png", "c.png"):
        samples.astronaut().save(tmp_path / "ann" / name)
    samples.grace_hopper().save(tmp_path / "solo.jpg")
    ids = {i.name: i for i in load_identities(tmp_path)}
    assert ids["ann"].reference.name == "reference.png" and [p.name for p in ids["ann"].held_out] == ["b.jpg", "c.png"]
    assert ids["solo"].held_out == [] and ids["solo"].gender is None


def _scores(path: Path, id_losses, clips):
    from pipelines.eval import SCORE_SCHEMA

    rows = [{"identity": "p", "prompt_id": f"q{i}", "seed": 1, "face_found": True, "id_loss": a, "clip_score": c,
             "image": f"images/p/q{i}_1.png", "prompt": "x", "tags": "{}"} for i, (a, c) in enumerate(zip(id_losses, clips))]
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCORE_SCHEMA), path / "scores.parquet")
    return path


def test_compare_pairs_items_and_gives_a_bootstrap_interval(tmp_path):
    from pipelines.cli import main
    from pipelines.eval import compare

    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.5, 300)
    a = _scores(tmp_path / "a", base, base)
    b = _scores(tmp_path / "b", base - 0.05 + rng.normal(0, 0.01, 300), base)
    c = compare(a, b, load_config("eval", overrides={"bootstrap": {"samples": 1000}}).bootstrap)
    m = c["metrics"]["id_loss"]
    assert c["paired_items"] == 300 and m["n"] == 300
    assert m["ci_low"] < m["diff"] < m["ci_high"] < 0 and m["diff"] == pytest.approx(-0.05, abs=0.003)
    assert c["metrics"]["clip_score"]["diff"] == pytest.approx(0.0) and c["metrics"]["pick_score"]["n"] == 0
    res = CliRunner().invoke(main, ["eval", "--compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "| ID Loss↓ |" in res.output and "300 paired items" in res.output


def test_eval_names_a_missing_model_before_starting_anything(models, ids_dir, bench_file, tmp_path):
    from pipelines.eval import run_eval

    with pytest.raises(FileNotFoundError, match=f"FLUX base: model not found: {tmp_path / 'nope'}"):
        run_eval(ids_dir, tmp_path / "r", eval_cfg(models, bench_file, model={"base": str(tmp_path / "nope")}))
    assert not (tmp_path / "r").exists()
