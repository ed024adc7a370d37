"""`infu curate` end to end on embedded Ray: accounting, bytes, sources, resume."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml

from curation import samples
from pipelines.jobs import load_config
from pipelines.curate import run_curate
from pipelines.job import ConfigMismatch, SourceSpec
from pipelines.summary import curate_summary
from replicas import BUILDERS

ROOT = Path(__file__).resolve().parent.parent

SPINE_ONLY = {"stages": []}  # the cheap filters alone (the face/NSFW stages have their own tests)

EXPECTED = {  # sample file stem -> (status, reason), cheap filters + dedup only
    "astronaut": ("kept", None), "grace_hopper": ("kept", None), "t1": ("kept", None),
    "cat": ("kept", None), "astronaut_cmyk": ("kept", None), "astronaut_palette": ("kept", None),
    "grace_alpha": ("kept", None), "small_face_canvas": ("kept", None), "two_portraits": ("kept", None),
    "watermarked": ("kept", None),
    "astronaut_resized_copy": ("rejected", "duplicate"), "grace_exif_rotated": ("rejected", "duplicate"),
    "grace_16bit_gray": ("rejected", "duplicate"), "tom_hanks": ("rejected", "low_resolution"),
    "strip": ("rejected", "bad_aspect"), "blurred": ("rejected", "blurry"), "bomb": ("rejected", "too_large"),
    "truncated": ("quarantined", "decode_error"), "not_an_image": ("quarantined", "decode_error"),
    "empty": ("quarantined", "decode_error"),
}


def rows(out, sub, columns=None):
    files = sorted(str(p) for p in (Path(out) / sub).glob("*.parquet"))
    return pads.dataset(files).to_table(columns=columns).to_pylist() if files else []


def outcome(out):
    return sorted((r["id"], r["status"], r["reason"], r["duplicate_of"])
                  for sub in ("kept", "rejected") for r in rows(out, sub, ["id", "status", "reason", "duplicate_of"]))


def test_sample_set_every_file_lands_where_it_should(sample_dir, ray_local, tmp_path, curate_cfg):
    curate_cfg = curate_cfg.updated(SPINE_ONLY)
    stats = run_curate([SourceSpec("folder", "sample", str(sample_dir))], tmp_path / "out", curate_cfg, log=lambda m: None)
    got = {Path(r["path"]).stem: (r["status"], r["reason"])
           for sub in ("kept", "rejected") for r in rows(tmp_path / "out", sub)}
    assert got == EXPECTED
    assert stats["adds_up"] and stats["inputs"] == 20 and stats["kept"] == 10
    assert stats["by_reason"]["duplicate"] == 3 and stats["by_reason"]["decode_error"] == 3
    kept = rows(tmp_path / "out", "kept")
    for r in kept:  # the original bytes, untouched
        assert r["image"] == (sample_dir / r["path"]).read_bytes()
        assert r["bucket"] and r["phash"] and r["width"] > 0
    dup = next(r for r in rows(tmp_path / "out", "rejected") if r["path"].endswith("astronaut_resized_copy.jpg"))
    assert dup["duplicate_of"] == next(r["id"] for r in kept if r["path"] == "portraits/astronaut.png")
    quarantined = [r for r in rows(tmp_path / "out", "rejected") if r["status"] == "quarantined"]
    assert all(r["error"] for r in quarantined)
    assert (tmp_path / "out" / "config.yaml").exists()


def test_rerun_is_a_no_op_and_a_new_config_is_refused(sample_dir, ray_local, tmp_path, curate_cfg):
    curate_cfg = curate_cfg.updated(SPINE_ONLY)
    spec = [SourceSpec("folder", "sample", str(sample_dir))]
    run_curate(spec, tmp_path / "o", curate_cfg, log=lambda m: None)
    first = outcome(tmp_path / "o")
    stats = run_curate(spec, tmp_path / "o", curate_cfg, log=lambda m: None)
    assert outcome(tmp_path / "o") == first and stats["adds_up"]
    stricter = curate_cfg.updated({"filters": {"min_side": 400}})
    with pytest.raises(ConfigMismatch, match="--overwrite"):
        run_curate(spec, tmp_path / "o", stricter, log=lambda m: None)
    stats = run_curate(spec, tmp_path / "o", stricter, overwrite=True, log=lambda m: None)
    assert stats["by_reason"]["low_resolution"] > 1 and stats["adds_up"]


def test_all_nine_datasets_plus_bad_sources_in_one_run(ray_local, tmp_path, curate_cfg):
    specs = []
    for kind, build in BUILDERS.items():
        build(tmp_path / kind)
        specs.append(SourceSpec(kind, kind, str(tmp_path / kind)))
    (tmp_path / "empty").mkdir()
    specs.append(SourceSpec("folder", "empty", str(tmp_path / "empty")))
    cfg = curate_cfg.updated({"dedup": {"enabled": False}, "filters": {"min_blur": 0}, **SPINE_ONLY})
    stats = run_curate(specs, tmp_path / "out", cfg, log=lambda m: None)
    assert stats["adds_up"]
    assert stats["by_source"]["empty"]["errors"], "an empty source among others is reported, the run goes on"
    kept = rows(tmp_path / "out", "kept")
    by_src = {}
    for r in kept:
        by_src.setdefault(r["source"], []).append(r)
    assert set(by_src) == set(BUILDERS)
    assert {r["identity"] for r in by_src["vggface2"]} == {"n000002", "n000003", "n009000"}
    frames = by_src["celebv_hq"]
    assert len(frames) == 8 and all(r["image_format"] == "png" and r["frame"] >= 0 for r in frames)
    assert any(c["text"] == "She looks calm." for r in by_src["celebv_text"] for c in r["captions"])
    q = [r for r in rows(tmp_path / "out", "rejected") if r["source"] == "cosmicmanhq"]
    assert [(r["status"], r["reason"]) for r in q] == [("quarantined", "missing_file")]


def _many_photos(root: Path, n: int) -> None:
    srcs = [samples.astronaut(), samples.grace_hopper(), samples.group()]
    for i in range(n):
        im = srcs[i % 3]
        w, h = im.size
        x, y = (i * 7) % (w - 300), (i * 11) % (h - 300)
        crop = im.crop((x, y, x + 300, y + 300)).resize((900, 900))
        (root / f"{i:04d}.jpg").write_bytes(samples.jpeg_bytes(crop))


@pytest.mark.slow
def test_resume_after_kill_9_gives_the_uninterrupted_result(ray_local, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _many_photos(data, 120)
    cfg_over = {**SPINE_ONLY, "output": {"rows_per_file": 6}, "quality": {"resources": {"batch_size": 3}},
                "ray": {"num_cpus": 2, "object_store_memory": 300_000_000}, "progress": False}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg_over))
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipelines.cli", "curate", "--source", f"folder={data}", "--out", str(killed),
           "--config", str(cfg_file), "--quiet"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = lambda: list((killed / "_work" / "candidates").glob("*.parquet"))  # noqa: E731
    deadline = time.time() + 120
    while time.time() < deadline and len(written()) < 3:
        assert proc.poll() is None, "the run finished before it could be killed; make the input bigger"
        time.sleep(0.05)
    # the driver, Ray's GCS and raylet die mid-run; Ray's workers (process groups of their own) outlive
    # them by seconds, and a write they finish then must not land in the rerun's output
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sum(pq.read_metadata(f).num_rows for f in written())
    assert len(written()) >= 3 and 0 < done < 120, f"the kill landed mid-run: {done} of 120 rows written"
    assert not (killed / "stats.json").exists()

    cfg = load_config("curate", cfg_file)  # what the killed CLI run used
    spec = [SourceSpec("folder", "folder", str(data))]
    stats = run_curate(spec, killed, cfg, log=lambda m: None)
    clean = run_curate(spec, tmp_path / "clean", cfg, log=lambda m: None)
    assert outcome(killed) == outcome(tmp_path / "clean")
    assert stats["adds_up"] and stats["inputs"] == clean["inputs"] == 120 and stats["duplicate_ids"] == 0
    digest = lambda out: sorted(hashlib.sha1(r["image"]).hexdigest() for r in rows(out, "kept", ["image"]))  # noqa: E731
    assert digest(killed) == digest(tmp_path / "clean")


WITH_FACES = {**EXPECTED, "cat": ("rejected", "no_face"), "watermarked": ("rejected", "watermark"), "t1": ("rejected", "multiple_faces"),
              "two_portraits": ("rejected", "multiple_faces"), "small_face_canvas": ("rejected", "small_face"),
              # 300 px copy: its face is ~50 px, under min_face_px, and faces run before dedup
              "astronaut_resized_copy": ("rejected", "small_face")}


def test_curate_refuses_pools_that_leave_no_cpu_to_decode(sample_dir, ray_local, tmp_path, curate_cfg):
    # an actor pool per stage: faces 1.5 + nsfw 0.25 + watermark 0.25 of 2
    curate_cfg = curate_cfg.updated({"execution": {"mode": "pools"},
                                     "stages": [{"name": "faces", "resources": {"num_cpus": 1.5}}, "nsfw", "watermark"]})
    with pytest.raises(ValueError, match=r"faces 1.5 x 1, nsfw 0.25 x 1, watermark 0.25 x 1\) ask for 2 of the "
                                         r"cluster's 2 CPUs and the read tasks need 1 more"):
        run_curate([SourceSpec("folder", "sample", str(sample_dir))], tmp_path / "out", curate_cfg, log=lambda m: None)


@pytest.mark.parametrize("mode", ["fused", "pools"])
def test_default_pipeline_runs_face_and_nsfw_filters_on_real_photos(sample_dir, ray_local, tmp_path, curate_cfg, mode):
    """Every stage in one actor (the CPU default) or a pool per stage: the same decisions."""
    curate_cfg = curate_cfg.updated({"execution": {"mode": mode}})
    stats = run_curate([SourceSpec("folder", "sample", str(sample_dir))], tmp_path / "out", curate_cfg, log=lambda m: None)
    got = {Path(r["path"]).stem: (r["status"], r["reason"])
           for sub in ("kept", "rejected") for r in rows(tmp_path / "out", sub)}
    assert got == WITH_FACES
    assert stats["adds_up"] and stats["stages"]["faces"]["ran"] and stats["stages"]["nsfw"]["ran"]
    assert stats["stages"]["watermark"]["ran"] and stats["stages"]["watermark"]["combine"] == "any"
    [mark] = stats["watermark_examples"]
    assert mark["path"] == "variants/watermarked.jpg" and mark["watermark"] >= 0.5 and mark["watermark_text"]
    summary = curate_summary(stats, "out")
    assert "watermark  ran" in summary and f"watermark on sample/variants/watermarked.jpg: {mark['watermark_text']}" in summary
    for r in rows(tmp_path / "out", "kept"):
        assert len(r["id_embedding"]) == 128 and r["id_backend"] == "dlib_resnet_v1"
        assert r["face_count"] == 1 and r["nsfw"] < 0.5 and r["watermark"] < 0.5
        assert r["bbox"][2] <= r["width"] and r["bbox"][3] <= r["height"]
