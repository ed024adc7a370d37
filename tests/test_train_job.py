"""`infu train` on the tiny model: resume is exact, bad records are skipped and counted,
the checkpoint loads in inference, Ray Train runs it."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import samples
from curation.records import SPSS_SCHEMA, empty_row, stable_id
from infu_model.pipeline import InfUPipeline
from infu_model.tiny import make_tiny
from pipelines.config import load_config, merge
from pipelines.train import train_loop


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def spss(tmp_path_factory):
    d = tmp_path_factory.mktemp("spss")
    rng = np.random.default_rng(0)
    photos = [samples.astronaut(), samples.grace_hopper(), samples.group()]
    rows = []
    for i in range(8):
        r = {k: v for k, v in empty_row().items() if not k.startswith("_")}
        im = photos[i % 3]
        r.update(id=stable_id("t", str(i)), source="t", path=f"{i}.jpg", frame=-1, status="kept",
                 image=samples.jpeg_bytes(im), width=im.width, height=im.height,
                 bucket=["1024x1024", "896x1152"][i % 2], id_embedding=rng.normal(0, 0.1, 128).astype("float32").tolist(),
                 kps=[[200.0, 200.0], [260.0, 200.0], [230.0, 240.0], [205.0, 280.0], [255.0, 280.0]],
                 captions=[{"source": "dataset", "text": f"a portrait number {i}"}])
        rows.append(r)
    rows[3]["id_embedding"] = None          # no identity: skipped, counted
    rows[5]["image"] = b"\xff\xd8 not a jpeg"  # corrupt bytes: skipped, counted
    (d / "kept").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SPSS_SCHEMA), d / "kept" / "part-0.parquet")
    return d


def _cfg(tiny, spss, out, steps, loader="ray", **train):
    return merge(load_config("stage1"), {
        "model": {"base": str(tiny["base"]), "embedding_dim": 128, "dtype": "float32"},
        "data": {"parquet": str(spss), "max_side": 32, "max_sequence_length": 16, "black_control_prob": 0.5,
                 "loader": loader, "shuffle_buffer": 4},
        "train": {"lr": 1e-3, "global_batch_size": 2, "micro_batch_size": 1, "max_steps": steps, "warmup_steps": 1,
                  "checkpoint_every": 3, "log_every": 1, **train},
        "output": str(out)})


@pytest.mark.parametrize("loader", ["ray", "plan"])
def test_resume_continues_exactly_and_bad_records_are_counted(tiny, spss, tmp_path, ray_local, loader):
    full = train_loop(_cfg(tiny, spss, tmp_path / "full", 6, loader))
    train_loop(_cfg(tiny, spss, tmp_path / "cut", 3, loader))  # "crash" after the step-3 checkpoint
    resumed = train_loop(_cfg(tiny, spss, tmp_path / "cut", 6, loader))
    assert resumed["losses"] == full["losses"][3:], "the loss sequence after resume equals the uninterrupted run"
    assert full["skipped"].get("missing_embedding", 0) >= 1 and full["skipped"].get("decode_error", 0) >= 1
    log = [json.loads(ln) for ln in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7)) and all(r["samples_per_s"] > 0 for r in log)
    assert (tmp_path / "full" / "loss_curve.png").exists() and (tmp_path / "full" / "train_log.csv").exists()
    pipe = InfUPipeline.from_pretrained(tiny["base"], tmp_path / "full" / "final", face_analyzer={"backend": "dlib"})
    img = pipe(samples.astronaut(), prompt="a portrait", width=32, height=32, num_inference_steps=2, output_type="np",
               progress=False, max_sequence_length=16)
    assert img.shape == (1, 32, 32, 3) and np.isfinite(img).all()


def test_ray_train_runs_the_loop(tiny, spss, tmp_path, ray_local):
    from pipelines.train import run_train

    res = run_train(_cfg(tiny, spss, tmp_path / "ray", 2))
    assert res["steps"] == 2 and np.isfinite(res["final_loss"])
    assert (tmp_path / "ray" / "final" / "infusenet" / "config.json").exists()


def test_ray_loader_streams_every_row_once_per_epoch_in_a_seeded_order(spss, tmp_path, ray_local):
    from pipelines.train import stream_batches

    t = pq.read_table(spss / "kept" / "part-0.parquet")
    files = []
    for k in range(3):  # several files, so the per-epoch file order and the rank split matter
        files.append(str(tmp_path / f"part-{k}.parquet"))
        pq.write_table(t.slice(3 * k, 3), files[-1])
    cols = ["id", "bucket", "image"]

    def ids(it, n):
        return [[r["id"] for r in next(it)] for _ in range(n)]

    first = ids(stream_batches(files, cols, 1, seed=5, shuffle_buffer=4), 16)
    assert sorted(sum(first[:8], [])) == sorted(t["id"].to_pylist()) == sorted(sum(first[8:], []))
    assert first[:8] != first[8:], "every epoch is reshuffled"
    assert ids(stream_batches(files, cols, 1, seed=5, shuffle_buffer=4), 16) == first  # a pure function of the seed
    assert ids(stream_batches(files, cols, 1, seed=5, shuffle_buffer=4, skip=5), 11) == first[5:]
    pairs = [next(it) for it in [stream_batches(files, cols, 2, seed=5)] for _ in range(6)]
    assert all(len({r["bucket"] for r in b}) == 1 and len(b) == 2 for b in pairs)
    shards = [sum(ids(stream_batches(files, cols, 1, seed=5, rank=r, world=2), 3), []) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1])  # two workers never see the same row in an epoch


def test_encoder_cache_gives_the_same_losses_without_running_the_encoders(tiny, spss, tmp_path, monkeypatch,
                                                                         ray_local):
    from diffusers import FluxPipeline

    from pipelines.train import build_cache

    plain = train_loop(_cfg(tiny, spss, tmp_path / "plain", 3))
    cfg = merge(_cfg(tiny, spss, tmp_path / "cached", 3),
                {"cache": {"enabled": True, "latents": True, "dir": str(tmp_path / "cache")}})
    counts = build_cache(cfg)
    assert counts["texts"] == 9 and counts["rows"] == 6 and counts["skipped_missing_embedding"] == 1
    assert list((tmp_path / "cache" / "text").glob("*.safetensors"))

    def no_encoder(*a, **k):
        raise AssertionError("the text encoders ran although their outputs are cached")

    monkeypatch.setattr(FluxPipeline, "encode_prompt", no_encoder)
    cached = train_loop(cfg)
    assert cached["losses"] == plain["losses"]
