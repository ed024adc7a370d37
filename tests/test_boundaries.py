"""The engine at its edges: every stage sees the pixels curation judged, no job touches a folder
that is not its own, nothing a resume reads runs code, dataset paths stay in their root, and
too little data is refused instead of waited on forever."""
from __future__ import annotations

import os
import pickle
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
from infu_model import images
from pipelines.jobs import load_config
from stages import caption_stage, curate_stage

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "infu-planted-payload-ran"


# ------------------------------------------------------------ one decoder ---
ODD = {  # a kept photo of each odd encoding, and the upright photo it shows
    "exif_rotated.jpg": (lambda: samples.exif_rotated(samples.grace_hopper()), samples.grace_hopper),
    "gray16.png": (lambda: samples.gray16(samples.grace_hopper()), lambda: samples.grace_hopper().convert("L")),
    "cmyk.jpg": (lambda: samples.jpeg_bytes(samples.astronaut().convert("CMYK"), quality=95), samples.astronaut),
    "palette.png": (lambda: samples.png_bytes(samples.astronaut().quantize(256)), samples.astronaut),
    "alpha.png": (lambda: samples.png_bytes(samples.grace_hopper().convert("RGBA")), samples.grace_hopper),
}


def _mean_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


@pytest.fixture(scope="module")
def curated_odd(tmp_path_factory):
    """The odd files through curation's own stages (quality + dlib faces), as SPSS rows."""
    from curation.registry import spss_schema
    from curation.engine import run_stage

    d = tmp_path_factory.mktemp("odd")
    rows = []
    for name, (make, _) in ODD.items():
        (d / name).write_bytes(make())
        r = {f.name: None for f in spss_schema(transient_too=True)}
        r.update(id=stable_id("odd", name), source="odd", path=name, frame=-1, _uri=str(d / name), _media="image",
                 status="pending")
        rows.append(r)
    quality = load_config("curate").quality_stage(keep_analysis=True)
    analysis = {}
    run_stage(quality, rows)
    for r in rows:
        analysis[r["path"]] = np.frombuffer(r["_analysis"], np.uint8).reshape(r["_analysis_h"], r["_analysis_w"], 3)
    run_stage(curate_stage("faces", backend="dlib"), rows)
    assert [(r["path"], r["status"]) for r in rows] == [(n, "pending") for n in ODD], "curation keeps all of them"
    return rows, analysis


def test_each_odd_encoding_trains_and_captions_on_the_pixels_curation_judged(curated_odd):
    from infu_model.faces import make_face_analyzer
    from infu_model.train_data import prepare, to_bucket

    rows, analysis = curated_odd
    data = replace(load_config("stage1").data, black_control_prob=0.0, caption_dropout=0.0)
    faces = make_face_analyzer({"backend": "dlib"})
    seen = []
    captioner = caption_stage(backend="blip2", model="unused")
    captioner.model = lambda ims: seen.extend(ims) or ["a photo of a person"] * len(ims)  # records what it is given
    captioner._ready = True
    captioner.process([dict(r) for r in rows])
    for r, caption_input in zip(rows, seen):
        full = images.decode(r["image"]).rgb                       # the one decoder, full size
        upright = np.asarray(ODD[r["path"]][1]().convert("RGB"))
        assert full.shape == upright.shape and _mean_abs(full, upright) < 8, f"{r['path']}: not the upright photo"
        small = np.asarray(images.rgb_image(r["image"]).resize(analysis[r["path"]].shape[1::-1]))
        assert _mean_abs(small, analysis[r["path"]]) < 4, f"{r['path']}: curation saw another picture"
        assert np.array_equal(np.asarray(caption_input), full), f"{r['path']}: the captioner sees other pixels"
        size = (448, 576)
        sample = prepare(r, data, len(r["id_embedding"]), size, random.Random(0))
        expected, kps = to_bucket(images.rgb_image(r["image"]), size, r["kps"])
        assert np.array_equal(np.asarray(sample["image"]), np.asarray(expected))
        found = faces.detect(np.asarray(sample["image"]))
        assert found, f"{r['path']}: no face in the training crop (sideways or white?)"
        err = np.linalg.norm(found[0].kps - kps, axis=1).max()
        assert err < 0.15 * found[0].short_side, f"{r['path']}: keypoints {err:.1f} px off the face"
        assert np.asarray(sample["control"]).any(), "the keypoint control image is drawn from those keypoints"


def test_infu_generate_decodes_the_id_photo_before_loading_any_model(tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import main

    (tmp_path / "id.jpg").write_bytes(b"this is a text file, not a photo")
    r = CliRunner().invoke(main, ["generate", "--base", str(tmp_path / "no-base"), "--infu", str(tmp_path / "no-infu"),
                                  "--id-image", str(tmp_path / "id.jpg"), "--prompt", "x", "--out", str(tmp_path / "o.png")])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert "id.jpg" in r.output and "not a usable image" in r.output, r.output


# ----------------------------------------------------------- dataset paths ---
def test_metadata_paths_outside_the_dataset_root_are_quarantined_and_never_read(tmp_path):
    from curation.sources import make_source

    root, secret = tmp_path / "cosmic", tmp_path / "secret.jpg"
    (root / "images").mkdir(parents=True)
    (root / "label").mkdir()
    secret.write_bytes(samples.jpeg_bytes(samples.astronaut()))
    (root / "images" / "ok.jpg").write_bytes(samples.jpeg_bytes(samples.grace_hopper()))
    pq.write_table(pa.table({"img_path": ["images/ok.jpg", "../secret.jpg", "images/../../secret.jpg",
                                          "/images/ok.jpg", "images/./ok.jpg"],
                             "caption": ["a", "b", "c", "d", "e"]}), root / "label" / "part-0.parquet")
    rows = list(make_source("cosmicmanhq", "c", str(root), load_config("curate").sources).items())
    got = [(r["path"], r["status"], r["reason"]) for r in rows]
    assert got[0] == ("images/ok.jpg", "pending", None)
    assert [g[1:] for g in got[1:3]] == [("quarantined", "outside_root")] * 2
    assert all(r["_uri"] is None and "outside the dataset root" in r["error"] for r in rows[1:3])
    assert got[3][:2] == ("images/ok.jpg", "pending") and got[4][:2] == ("images/ok.jpg", "pending")


def test_a_symlink_loop_in_a_folder_source_is_listed_once(tmp_path):
    from curation.sources import make_source

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "p.jpg").write_bytes(samples.jpeg_bytes(samples.astronaut()))
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")   # a/b/loop -> a
    src = make_source("folder", "f", str(tmp_path), load_config("curate").sources)
    rows = list(src.items())
    assert [r["path"] for r in rows] == ["a/b/p.jpg"]
    assert any("symlink loop" in e for e in src.errors)


# ---------------------------------------------------------- output folders ---
def test_a_job_writes_only_into_an_empty_folder_or_its_own_output(tmp_path):
    from pipelines.job import OutputRefused, claim_output, clear

    with claim_output(tmp_path / "new", "curate") as claim:                     # missing: made
        assert claim.out.is_dir()
    (tmp_path / "empty").mkdir()
    with claim_output(tmp_path / "empty", "caption"):                          # empty: taken
        with pytest.raises(OutputRefused, match="in use by a live `infu caption` run"):
            claim_output(tmp_path / "empty", "caption")                         # held: refused, here too
    claim_output(tmp_path / "empty", "caption").release()                       # its own: taken again
    with pytest.raises(OutputRefused, match="output of `infu caption`, not of `infu curate`"):
        claim_output(tmp_path / "empty", "curate")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "me.jpg").write_bytes(b"jpeg")
    (photos / "draft.tmp").write_bytes(b"mine")
    with pytest.raises(OutputRefused, match="holds no earlier `infu train` output"):
        claim_output(photos, "train")
    assert sorted(p.name for p in photos.iterdir()) == ["draft.tmp", "me.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputRefused, match="is a file"):
        claim_output(tmp_path / "file", "eval")
    with pytest.raises(OutputRefused, match="cannot write the output folder"):
        claim_output(tmp_path / "file" / "below", "eval")
    own = tmp_path / "new"
    for f in ("kept/a.parquet", "_work/logs/curate.log", "stats.json", "my-notes.txt"):
        (own / f).parent.mkdir(parents=True, exist_ok=True)
        (own / f).write_text("x")
    clear(own, "curate", keep=(own / "_work" / "logs",))
    assert sorted(str(p.relative_to(own)) for p in own.rglob("*")) == [
        "_work", "_work/logs", "_work/logs/curate.log", "my-notes.txt", "run.json"]


def test_a_killed_runs_late_write_never_lands_in_the_rerun(tmp_path):
    """Ray's workers outlive a kill -9 of the driver by seconds: a write they finish after the
    rerun listed what is done would give rows twice. The rerun takes the folder; the late write is dropped."""
    from pipelines.job import Layout, SourceSpec, claim_output, prepare_out
    from pipelines.sink import RowSink, Superseded

    cfg, specs = load_config("curate"), [SourceSpec("folder", "folder", str(tmp_path))]
    killed, rerun = Layout(tmp_path / "out"), Layout(tmp_path / "out")
    with claim_output(tmp_path / "out", "curate") as claim:  # (the kernel drops a killed driver's lock)
        prepare_out(killed, claim, cfg, specs, False)
    late = RowSink(killed.candidates, killed.rejected, 4, False, spss_schema(), lease=killed.lease)  # a dead run's writer
    alive = {**spss_rows(1)[0], "status": ALIVE}
    dropped = {**spss_rows(2)[1], "status": "rejected", "reason": "blurry"}
    block = pa.Table.from_pylist([alive, dropped], schema=spss_schema())
    late.write([block], None)  # before the rerun: lands, and the rerun counts it as done
    assert len(list(killed.candidates.glob("*.parquet"))) == len(list(killed.rejected.glob("*.parquet"))) == 1

    with claim_output(tmp_path / "out", "curate") as claim:
        prepare_out(rerun, claim, cfg, specs, False)
    with pytest.raises(Superseded, match="taken over by another run"):
        late.write([block.slice(0, 1).set_column(0, "id", pa.array(["other"]))], None)
    assert len(list(killed.candidates.glob("*"))) == 1, "nothing added, no .tmp left"
    RowSink(rerun.candidates, rerun.rejected, 4, False, spss_schema(), lease=rerun.lease).write(
        [block.slice(1).set_column(0, "id", pa.array(["mine"]))], None)
    assert len(list(rerun.rejected.glob("*.parquet"))) == 2


def test_a_files_bytes_follow_from_its_rows_not_from_the_order_its_blocks_arrived(tmp_path):
    """Workers' blocks arrive in whatever order their reads finish (a bucket's objects most of all): the
    file they make holds its rows in id order, so the same rows give the same file, and training's ray
    loader, which streams files in order, the same batches."""
    from pipelines.sink import RowSink

    rows = [{**r, "status": ALIVE} for r in spss_rows(4)]
    made = []
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        out = tmp_path / "-".join(map(str, order))
        blocks = [pa.Table.from_pylist([rows[i]], schema=spss_schema()) for i in order]
        RowSink(out, out, 4, False, spss_schema()).write(blocks, None)
        [f] = list(out.glob("*.parquet"))
        made.append((f.name, f.read_bytes()))
        assert pq.read_table(f)["id"].to_pylist() == sorted(r["id"] for r in rows)
    assert made[0] == made[1]


@pytest.mark.parametrize("overwrite", [False, True])
def test_pointing_a_job_at_ones_photos_changes_nothing(sample_dir, tmp_path, overwrite):
    from click.testing import CliRunner

    from pipelines.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(samples.jpeg_bytes(samples.astronaut()))
    (photos / "half-edited.tmp").write_bytes(b"a file of mine")
    (photos / "sub").mkdir()
    (photos / "sub" / "x.tmp").write_bytes(b"mine too")
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    args = ["curate", "--source", f"folder={sample_dir}", "--out", str(photos)] + (["--overwrite"] if overwrite else [])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "refusing to write into it" in r.output and "Traceback" not in r.output
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before, "not a byte changed or added"
    r = CliRunner().invoke(main, ["report", str(photos)])
    assert r.exit_code == 1 and "nothing to report" in r.output and not (photos / "report.html").exists()


# -------------------------------------------------------------- checkpoints ---
class Planted:
    def __reduce__(self):
        return (Path.write_text, (MARKER, "the payload ran"))


def test_a_pickle_planted_in_a_checkpoint_never_runs(tmp_path, tiny_models, tiny_spss):
    from pipelines.train import train_loop
    from pipelines.train.checkpoint import UnsafeCheckpoint

    MARKER.unlink(missing_ok=True)
    cfg = train_cfg(tiny_models, tiny_spss, tmp_path / "run", steps=1)
    train_loop(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000001"
    assert sorted(p.name for p in ckpt.iterdir() if p.is_file()) == [
        "infu.json", "optimizer.pt", "rank-0.json", "trainer_state.json"], "no pickle but the weights-only optimizer"
    for name in ("optimizer.pt", "trainer_state.pt", "rank-0.pt"):
        (ckpt / name).write_bytes(pickle.dumps({"state": Planted()}))
    with pytest.raises(UnsafeCheckpoint, match="optimizer.pt holds more than tensors"):
        train_loop(cfg.updated({"train": {"max_steps": 2}}))
    assert not MARKER.exists(), "resuming ran code planted in the checkpoint"


# -------------------------------------------------------------- too little ---
def test_a_killed_training_runs_late_checkpoint_never_lands(tmp_path, tiny_models, tiny_spss):
    """A killed run's training workers, alive for seconds, reach a save after the rerun took the
    folder: nothing of theirs appears beside the rerun's checkpoints."""
    from pipelines.job import lease_file
    from pipelines.sink import Lease, Superseded
    from pipelines.train import Trainer
    from pipelines.train.checkpoint import FolderCheckpoints

    out = tmp_path / "out"
    killed = FolderCheckpoints(out, keep=2, lease=Lease.take(lease_file(out)))
    trainer = Trainer(train_cfg(tiny_models, tiny_spss, out, steps=2), killed)
    trainer.train_step()
    Lease.take(lease_file(out))  # the rerun
    with pytest.raises(Superseded):
        trainer.run()
    assert list((out / "checkpoints").glob("*")) == []


def test_a_global_batch_without_a_usable_row_leaves_the_weights_as_they_are(tmp_path, tiny_models):
    """Every row of the step undecodable: no gradient, so no optimizer step (AdamW's weight decay and
    momentum would move the weights); the usable steps around it still train."""
    import torch

    from pipelines.train import Trainer

    rows = spss_rows(4)
    for r in rows[1:3]:
        r["image"] = b"\xff\xd8 broken"
    data = write_spss(tmp_path / "half", rows)
    trainer = Trainer(train_cfg(tiny_models, data, tmp_path / "out", steps=8))
    moved = []
    for _ in range(8):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        rec = trainer.train_step()
        same = all(torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
        moved.append((rec["samples"], not same))
    assert {m for n, m in moved if n == 0} == {False} and {m for n, m in moved if n} == {True}, moved
    first_usable = next(i for i, (n, _) in enumerate(moved) if n)
    assert any(n == 0 for n, _ in moved[first_usable:]), "a step without rows came after AdamW had momentum"


def test_data_that_can_form_no_batch_is_refused_not_waited_on(tmp_path, tiny_models, tiny_spss, ray_local):
    from pipelines.train import check_training
    from pipelines.train.loaders import NotEnoughData, batch_plan, stream_batches

    few = tmp_path / "few"
    few.mkdir()
    table = pq.read_table(next((tiny_spss / "kept").glob("*.parquet")))
    pq.write_table(table, few / "part.parquet")       # 4 rows in each of two buckets
    cfg = train_cfg(tiny_models, few, tmp_path / "out", steps=2, micro_batch_size=5, global_batch_size=5)
    with pytest.raises(NotEnoughData, match=r"no bucket holds micro_batch_size=5 .* 1024x1024: 4, 896x1152: 4"):
        check_training(cfg.data.parquet, cfg)
    files = [str(few / "part.parquet")]
    with pytest.raises(NotEnoughData):
        next(batch_plan(files, ["bucket"], 5, seed=0))
    with pytest.raises(NotEnoughData, match="formed no micro-batch"):
        next(stream_batches(files, ["bucket"], 5, seed=0))
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(spss_schema().empty_table(), empty / "part.parquet")
    with pytest.raises(NotEnoughData, match="holds 0 rows"):
        check_training(empty, train_cfg(tiny_models, empty, tmp_path / "out", steps=2))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ fixtures ---
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from infu_model.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


def spss_rows(n: int, broken: bool = False) -> list[dict]:
    """SPSS rows of real photos (two buckets), each with a 128-d identity; ``broken``: undecodable bytes."""
    rng = np.random.default_rng(0)
    photos = [samples.astronaut(), samples.grace_hopper()]
    rows = []
    for i in range(n):
        r = {k: v for k, v in empty_row().items() if not k.startswith("_")}
        im = photos[i % 2]
        r.update(id=stable_id("t", str(i)), source="t", path=f"{i}.jpg", frame=-1, status="kept",
                 image=b"\xff\xd8 broken" if broken else samples.jpeg_bytes(im), width=im.width, height=im.height,
                 bucket=["1024x1024", "896x1152"][i % 2], id_embedding=rng.normal(0, 0.1, 128).astype("float32").tolist(),
                 kps=[[200.0, 200.0], [260.0, 200.0], [230.0, 240.0], [205.0, 280.0], [255.0, 280.0]],
                 captions=[{"source": "dataset", "text": f"a portrait number {i}"}])
        rows.append(r)
    return rows


def write_spss(d: Path, rows: list[dict]) -> Path:
    (d / "kept").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=spss_schema()), d / "kept" / "part-0.parquet")
    return d


@pytest.fixture(scope="module")
def tiny_spss(tmp_path_factory):
    return write_spss(tmp_path_factory.mktemp("spss"), spss_rows(8))


def train_cfg(tiny, spss, out, steps, **train):

    return load_config("stage1", overrides={
        "model": {"base": str(tiny["base"]), "embedding_dim": 128, "dtype": "float32", "face_backend": "dlib",
                  "projection": {"dim": 32, "depth": 1, "dim_head": 8, "heads": 4, "ff_mult": 2}},
        "data": {"parquet": str(spss), "max_side": 32, "max_sequence_length": 16, "loader": "plan"},
        "train": {"global_batch_size": 1, "micro_batch_size": 1, "max_steps": steps, "warmup_steps": 0,
                  "checkpoint_every": 1, "log_every": 1, **train},
        "output": str(out)})


# ------------------------------------------------------------- user mistakes ---
def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _train_yaml(t: Path, m: dict, parquet: Path, **top) -> Path:
    import yaml

    body = {"stage": 1, "model": {"base": str(m["base"]), "embedding_dim": 128}, "data": {"parquet": str(parquet)},
            "output": str(t / "out"), **top}
    return _write(t / "train.yaml", yaml.safe_dump(body))


def _ids(t: Path, yaml_text: str, photo: bytes | None = None) -> Path:
    if photo is not None:
        (t / "ids").mkdir(exist_ok=True)
        (t / "ids" / "me.jpg").write_bytes(photo)
    return _write(t / "ids" / "ids.yaml", yaml_text).parent


MISTAKES = {  # name: (invocation(tmp, models, sample_dir) -> args, what the one line must name)
    "config: malformed YAML": (lambda t, m, s: ["curate", "--source", f"folder={s}", "--out", str(t / "out"),
                                                "--config", str(_write(t / "c.yaml", "filters:\n  min_side: [300\n"))],
                               "c.yaml:3: not valid YAML"),
    "config: top level a list": (lambda t, m, s: ["curate", "--source", f"folder={s}", "--out", str(t / "out"),
                                                  "--config", str(_write(t / "c.yaml", "- stages\n- filters\n"))],
                                 "c.yaml: the top level must be a mapping"),
    "source: wrong path": (lambda t, m, s: ["curate", "--source", f"ffhq={t / 'nowhere'}", "--out", str(t / "out")],
                           "path does not exist: " + "{t}/nowhere"),
    "source: no image in it": (lambda t, m, s: ["curate", "--source", f"folder={(t / 'e').mkdir() or t / 'e'}",
                                                "--out", str(t / "out")], "nothing to curate: no source holds an image"),
    "out: a file": (lambda t, m, s: ["curate", "--source", f"folder={s}", "--out", str(_write(t / "out", "x"))],
                    "out' is a file"),
    "out: cannot be made": (lambda t, m, s: ["curate", "--source", f"folder={s}", "--out", "/proc/infu-out"],
                            "cannot write the output folder /proc/infu-out"),
    "out: another job's": (lambda t, m, s: ["caption", str(t / "in"), "--out", str(_write(
        t / "out" / "run.json", '{"job": "synth"}').parent)] if _parquet(t / "in" / "a.parquet", pa.table(
            {"id": ["x"], "image": [b"x"]})) else [], "holds the output of `infu synth`"),
    "run: malformed YAML": (lambda t, m, s: ["run", str(_write(t / "p.yaml", "root: out\nstages: {curate: {\n"))],
                            "p.yaml:3: not valid YAML"),
    "run: stages as a list": (lambda t, m, s: ["run", str(_write(t / "p.yaml", "root: out\nstages: [curate]\n"))],
                              "p.yaml: stages: expected a mapping"),
    "train: stage 3": (lambda t, m, s: ["train", "--config", str(_write(t / "train.yaml", "stage: 3\n"))],
                       "train.yaml: stage: 3 is not 1"),
    "train: Parquet without the image column": (lambda t, m, s: ["train", "--config", str(_train_yaml(
        t, m, _parquet(t / "d" / "a.parquet", pa.table({"id": ["x"], "bucket": ["64x64"]})).parent))],
        "a.parquet: lacks the column(s) image, id_embedding that infu train reads"),
    "train: no rows": (lambda t, m, s: ["train", "--config", str(_train_yaml(
        t, m, _parquet(t / "d" / "a.parquet", spss_schema().empty_table()).parent))], "holds 0 rows"),
    "caption: not Parquet": (lambda t, m, s: ["caption", str(_write(t / "in" / "x.parquet", "id,image\n").parent),
                                              "--out", str(t / "out")], "x.parquet: not a readable Parquet file"),
    "caption: no rows": (lambda t, m, s: ["caption", str(_parquet(t / "in" / "kept" / "a.parquet",
                                                                   spss_schema().empty_table()).parent.parent),
                                          "--out", str(t / "out")], "nothing to caption"),
    "synth: malformed prompt bank": (lambda t, m, s: [
        "synth", "--spss", str(write_spss(t / "spss", spss_rows(1))), "--model", str(m["infu"]), "--base",
        str(m["base"]), "--prompts", str(_write(t / "bank.yaml", "prompts:\n  - {id: a, text: 'x'\n")),
        "--out", str(t / "out")], "bank.yaml:3: not valid YAML"),
    "synth: SPSS without identities": (lambda t, m, s: [
        "synth", "--spss", str(_parquet(t / "spss" / "a.parquet", pa.table({"id": ["x"], "image": [b"x"]})).parent),
        "--model", str(m["infu"]), "--base", str(m["base"]), "--out", str(t / "out")],
        "a.parquet: lacks the column(s) source, identity, gender, bbox, kps"),
    "synth: no rows": (lambda t, m, s: [
        "synth", "--spss", str(_parquet(t / "spss" / "a.parquet", spss_schema().empty_table()).parent),
        "--model", str(m["infu"]), "--base", str(m["base"]), "--out", str(t / "out")], "no identity sources"),
    "eval: no identity photos": (lambda t, m, s: [
        "eval", "--model", str(m["infu"]), "--base", str(m["base"]), "--out", str(t / "out"),
        "--ids", str((t / "ids").mkdir() or t / "ids")], "no identity photos under {t}/ids"),
    "eval: malformed ids.yaml": (lambda t, m, s: [
        "eval", "--model", str(m["infu"]), "--base", str(m["base"]), "--out", str(t / "out"),
        "--ids", str(_ids(t, "identities: [{name: me, reference: me.jpg\n"))], "ids.yaml:2: not valid YAML"),
    "eval: identity name leaving the output": (lambda t, m, s: [
        "eval", "--model", str(m["infu"]), "--base", str(m["base"]), "--out", str(t / "out"),
        "--ids", str(_ids(t, "identities: [{name: ../../x, reference: me.jpg}]\n", samples.jpeg_bytes(
            samples.astronaut())))], "identities[0].name: '../../x' cannot name a file"),
    "eval: photo that is not an image": (lambda t, m, s: [
        "eval", "--model", str(m["infu"]), "--base", str(m["base"]), "--out", str(t / "out"),
        "--ids", str(_ids(t, "identities: [{name: me, reference: me.jpg}]\n", b"not a photo"))],
        "me.jpg: not a recognised image format"),
    "eval --compare: no scores": (lambda t, m, s: ["eval", "--compare", str((t / "a").mkdir() or t / "a"),
                                                   str((t / "b").mkdir() or t / "b")], "holds no scores.parquet"),
    "report: not a job's folder": (lambda t, m, s: ["report", str((t / "out").mkdir() or t / "out")],
                                   "nothing to report"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_users_mistake_ends_in_one_line_naming_it(case, tmp_path, tiny_models, sample_dir):
    from click.testing import CliRunner

    from pipelines.cli import main

    invoke, message = MISTAKES[case]
    args = invoke(tmp_path, tiny_models, sample_dir)
    existed = (tmp_path / "out").exists()
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit), f"{case}: {r.exception!r}\n{r.output}"
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error: ")]
    assert "Traceback" not in r.output and len(errors) == 1, r.output
    assert message.format(t=tmp_path) in errors[0], r.output
    if not existed:
        assert not (tmp_path / "out").exists(), "refused before any output or log folder was made"


# ---------------------------------------------------------------- edge sizes ---
def _curate(src: Path, out: Path, cfg: dict | None = None) -> dict:
    from pipelines.config import merge
    from pipelines.jobs import load_config
    from pipelines.curate import run_curate
    from pipelines.job import SourceSpec

    cfg = load_config("curate", overrides=merge({"progress": False, "stages": []}, cfg or {}))
    return run_curate([SourceSpec("folder", "f", str(src))], out, cfg, log=lambda m: None)


def _folder(d: Path, files: dict) -> Path:
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def test_curate_ends_with_stats_that_add_up_when_all_kept_all_rejected_or_all_quarantined(ray_local, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import main

    one = _folder(tmp_path / "one", {"a.jpg": samples.jpeg_bytes(samples.astronaut())})
    r = CliRunner().invoke(main, ["curate", "--source", f"folder={one}", "--out", str(tmp_path / "kept"), "--quiet",
                                  "--config", str(_write(tmp_path / "c.yaml", "stages: []\n"))])
    assert r.exit_code == 0 and "every input kept, rejected or quarantined: yes" in r.output, r.output
    blurred = samples.astronaut().filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(6))
    cases = {"kept": ({"a.jpg": samples.jpeg_bytes(samples.astronaut())}, (1, 0, 0)),
             "rejected": ({"b.jpg": samples.jpeg_bytes(blurred)}, (0, 1, 0)),
             "quarantined": ({"c.jpg": b"\xff\xd8 broken", "d.png": b""}, (0, 0, 2))}
    for name, (files, counts) in cases.items():
        stats = _curate(_folder(tmp_path / f"in-{name}", files), tmp_path / f"out-{name}")
        assert (stats["kept"], stats["rejected"], stats["quarantined"]) == counts and stats["adds_up"], name
        assert (tmp_path / f"out-{name}" / "stats.json").is_file()
    assert stats["by_reason"]["decode_error"] == 2


def test_caption_ends_with_stats_that_add_up_for_one_row_and_all_quarantined(ray_local, tmp_path):
    from pipelines.caption import run_caption
    from tiny_vlm import make_tiny_blip2

    cfg = load_config("caption", overrides={"progress": False, "captioners": []})
    one = write_spss(tmp_path / "one", spss_rows(1))
    stats = run_caption(one, tmp_path / "out-one", cfg, log=lambda m: None)   # no captioner: kept as they are
    assert (stats["inputs"], stats["kept"], stats["quarantined"]) == (1, 1, 0) and stats["adds_up"]
    cfg = cfg.updated({"captioners": [{"name": "blip2", "model": str(make_tiny_blip2(tmp_path / "blip2")),
                                       "max_new_tokens": 4}]})   # captions never reject a row: kept or quarantined only
    broken = write_spss(tmp_path / "broken", spss_rows(2, broken=True))
    stats = run_caption(broken, tmp_path / "out-broken", cfg, log=lambda m: None)
    assert (stats["inputs"], stats["kept"], stats["quarantined"]) == (2, 0, 2) and stats["adds_up"]
    rows = pq.read_table(next((tmp_path / "out-broken" / "rejected").glob("*.parquet"))).to_pylist()
    assert {(r["reason"], r["error"].split(":")[0]) for r in rows} == {("caption_error", "DecodeError")}


def source_as_target(image, row, **_):
    """A post-processing hook that hands the ID filter the real source photo: every pair is kept."""
    return images.rgb_image(row["_source_image"])


@pytest.mark.parametrize("case", ["all quarantined", "all kept"])
def test_synth_ends_with_stats_that_add_up(case, ray_local, tiny_models, tmp_path):
    """One source, one pair (all rejected is the synth job test's: a random model draws no face)."""
    from pipelines.synth import run_synth
    from test_synth import spss_row

    row = spss_row(samples.astronaut(), "astronaut.png")
    if case == "all quarantined":
        row.update(image=b"\xff\xd8 broken", id_embedding=None)   # nothing to take the identity from
    spss = tmp_path / "spss"
    (spss / "kept").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=spss_schema()), spss / "kept" / "part-0.parquet")
    cfg = load_config("synth", overrides={
        "progress": False, "model": {"base": str(tiny_models["base"]), "path": str(tiny_models["infu"]),
                                     "dtype": "float32"},
        "generation": {"width": 64, "height": 64, "steps": 2}, "prompts": {"per_source": 1},
        "postprocess": {"hook": "test_boundaries:source_as_target"} if case == "all kept" else {}})
    stats = run_synth(spss, tmp_path / "out", cfg, log=lambda m: None)
    expected = {"all quarantined": (0, 0, 1), "all kept": (1, 0, 0)}[case]
    assert (stats["kept"], stats["rejected"], stats["quarantined"]) == expected and stats["adds_up"], stats
    assert stats["pairs_planned"] == stats["pairs"] == 1


def test_train_one_row_trains_and_all_unusable_rows_stop_with_one_line(ray_local, tiny_models, tmp_path):
    from pipelines.train import run_train, train_loop
    from pipelines.train.loaders import NotEnoughData

    one = write_spss(tmp_path / "one", spss_rows(1))
    res = train_loop(train_cfg(tiny_models, one, tmp_path / "out-one", steps=2, checkpoint_every=2))
    assert res["step"] == 2 and not res["skipped"] and (tmp_path / "out-one" / "final" / "infu.json").is_file()
    broken = write_spss(tmp_path / "broken", spss_rows(2, broken=True))
    with pytest.raises(NotEnoughData, match=r"not one usable training row in 2 steps.*'decode_error': 2"):
        run_train(broken, tmp_path / "out-broken", train_cfg(tiny_models, broken, tmp_path / "out-broken", steps=50),
                  log=lambda m: None)


def test_eval_of_an_identity_without_a_face_to_take_adds_up(ray_local, tiny_models, tmp_path):
    """Every planned image fails to generate (the reference holds no face): the summary still adds up."""
    from pipelines.eval import run_eval

    bench = _write(tmp_path / "bench.yaml", "prompts:\n  - {id: a1, gender: any, text: a person on a street}\n")
    cfg = load_config("eval", overrides={
        "progress": False, "benchmark": str(bench), "label": "tiny", "generation": {"width": 64, "height": 64, "steps": 2},
        "model": {"base": str(tiny_models["base"]), "path": str(tiny_models["infu"]), "dtype": "float32"},
        "id_metric": {"faces": {"backend": "dlib"}}, "clipscore": {"model": None}, "pickscore": {"model": None}})
    ids = tmp_path / "ids"
    ids.mkdir()
    samples.cat().save(ids / "cat.png")
    s = run_eval(ids, tmp_path / "out", cfg, log=lambda m: None)
    assert (s["planned"], s["images"], len(s["generation_failures"])) == (1, 0, 1) and s["adds_up"], s
    assert s["generation_failures"][0]["reason"] == "source_no_face" and s["metrics"]["id_loss"] is None
    assert "1 planned images are missing" in (tmp_path / "out" / "summary.md").read_text()


def test_a_pipeline_whose_curation_keeps_nothing_stops_at_the_next_stage_in_one_line(ray_local, tmp_path):
    import yaml
    from click.testing import CliRunner

    from pipelines.cli import main

    src = _folder(tmp_path / "src", {"broken.jpg": b"\xff\xd8 broken"})
    spec = {"root": str(tmp_path / "root"), "sources": [f"folder={src}"], "progress": False,
            "stages": {"curate": {"set": {"stages": []}}, "caption": {"set": {"captioners": []}}}}
    r = CliRunner().invoke(main, ["run", str(_write(tmp_path / "p.yaml", yaml.safe_dump(spec)))])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert f"Error: {tmp_path / 'root' / 'curated'} kept no rows" in r.output
    stats = __import__("json").loads((tmp_path / "root" / "curated" / "stats.json").read_text())
    assert stats["quarantined"] == 1 and stats["adds_up"]
