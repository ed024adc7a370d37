"""`infu train` on the tiny model: resume is exact (also after kill -9 and on another number of
workers), bad records are skipped and counted, the checkpoint loads in inference, several
workers train one model (DDP and FSDP over gloo) and take the same steps as one worker."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import samples
from curation.records import stable_id
from curation.registry import empty_row
from curation.registry import spss_schema
from infu_model.pipeline import InfUPipeline
from infu_model.tiny import make_tiny
from curation.engine import plain
from pipelines.jobs import load_config
from pipelines.train import train_loop

KILL_DURING_SECOND_SAVE = """
import json, os, signal, sys
from infu_model.projection import ProjectionNetwork
save, calls = ProjectionNetwork.save_pretrained, []
def save_then_die(self, *a, **k):
    calls.append(1)
    if len(calls) == 2:  # the second checkpoint: InfuseNet is written, the projection never will be
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, *a, **k)
ProjectionNetwork.save_pretrained = save_then_die
from pipelines.train import TrainConfig, train_loop
train_loop(TrainConfig.parse(json.loads(sys.argv[1]), "argv"))
"""


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
    pq.write_table(pa.Table.from_pylist(rows, schema=spss_schema()), d / "kept" / "part-0.parquet")
    return d


def _cfg(tiny, spss, out, steps, loader="ray", ray=None, model=None, **train):
    return load_config("stage1", overrides={
        "model": {"base": str(tiny["base"]), "embedding_dim": 128, "dtype": "float32",
                  "projection": {"dim": 32, "depth": 1, "dim_head": 8, "heads": 4, "ff_mult": 2}, **(model or {})},
        "data": {"parquet": str(spss), "max_side": 32, "max_sequence_length": 16, "black_control_prob": 0.5,
                 "loader": loader, "shuffle_buffer": 4},
        "train": {"lr": 1e-3, "global_batch_size": 2, "micro_batch_size": 1, "max_steps": steps, "warmup_steps": 1,
                  "checkpoint_every": 3, "log_every": 1, **train},
        "ray": ray or {}, "output": str(out)})


def _weights(folder):
    from safetensors.torch import load_file

    return {f"{part}.{k}": v for part in ("infusenet", "image_proj") for k, v in
            load_file(next((Path(folder) / part).glob("*.safetensors"))).items()}


def _relative_gap(a: dict, b: dict, per_tensor: bool = False) -> float:
    """|a - b| / |a| over all the weights (or the largest per tensor: small, zero-initialised
    tensors such as controlnet_x_embedder show float reduction order most)."""
    import torch

    assert a.keys() == b.keys()
    if per_tensor:
        return max(float((a[k] - b[k]).norm() / a[k].norm().clamp(min=1e-12)) for k in a)
    va, vb = (torch.cat([w[k].flatten().double() for k in sorted(a)]) for w in (a, b))
    return float((va - vb).norm() / va.norm())


def test_a_run_logs_its_first_step_then_every_log_every_steps(tiny, spss, tmp_path):
    """Step 1 is logged whatever log_every is, so a long run shows its first step at once; then every
    log_every steps and the last one, each record averaging the steps since the one before."""
    res = train_loop(_cfg(tiny, spss, tmp_path / "out", 4, "plan", checkpoint_every=4, log_every=3))
    log = [json.loads(ln) for ln in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 3, 4]
    assert [r["loss"] for r in log] == pytest.approx([res["losses"][0], sum(res["losses"][1:3]) / 2, res["losses"][3]])


@pytest.mark.parametrize("loader", ["ray", "plan"])
def test_resume_continues_exactly_and_bad_records_are_counted(tiny, spss, tmp_path, ray_local, loader):
    full = train_loop(_cfg(tiny, spss, tmp_path / "full", 4, loader, checkpoint_every=2))
    if loader == "ray":  # stop after the step-2 checkpoint
        train_loop(_cfg(tiny, spss, tmp_path / "cut", 2, loader, checkpoint_every=2))
    else:  # kill -9 in the middle of writing the step-4 checkpoint
        cut = subprocess.run([sys.executable, "-c", KILL_DURING_SECOND_SAVE,
                              json.dumps(plain(_cfg(tiny, spss, tmp_path / "cut", 4, loader, checkpoint_every=2)))],
                             capture_output=True)
        assert cut.returncode == -signal.SIGKILL, cut.stderr.decode()[-2000:]
        assert [p.name for p in sorted((tmp_path / "cut" / "checkpoints").iterdir())] == \
            ["step-00000002", "step-00000004.tmp"], "the half-written checkpoint is not the latest"
    resumed = train_loop(_cfg(tiny, spss, tmp_path / "cut", 4, loader, checkpoint_every=2))
    assert resumed["losses"] == full["losses"][2:], "the loss sequence after resume equals the uninterrupted run"
    assert _relative_gap(_weights(tmp_path / "full" / "final"), _weights(tmp_path / "cut" / "final")) == 0
    assert not list((tmp_path / "cut" / "checkpoints").glob("*.tmp"))
    assert full["skipped"].get("missing_embedding", 0) >= 1 and full["skipped"].get("decode_error", 0) >= 1
    for run in ("full", "cut"):
        log = [json.loads(ln) for ln in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(1, 5)) and all(r["samples_per_s"] > 0 for r in log)
    assert (tmp_path / "full" / "loss_curve.png").exists() and (tmp_path / "full" / "train_log.csv").exists()
    pipe = InfUPipeline.from_pretrained(tiny["base"], tmp_path / "full" / "final", face_analyzer={"backend": "dlib"})
    img = pipe(samples.astronaut(), prompt="a portrait", width=32, height=32, num_inference_steps=2, output_type="np",
               max_sequence_length=16).images
    assert img.shape == (1, 32, 32, 3) and np.isfinite(img).all()


@pytest.mark.slow  # quick: test_job_protocol refuses a changed train.lr in one line
def test_a_rerun_with_another_lr_is_refused_and_more_steps_resume(tiny, spss, tmp_path, ray_local):
    """The same output with another lr is refused in one line naming it and both values (the optimizer
    state would silently win over it); more max_steps, other checkpoint and log intervals resume;
    --overwrite starts over with the new lr (and the exports, which a rerun may add, are written)."""
    from pipelines.job import ConfigMismatch
    from pipelines.train import run_train

    out = tmp_path / "out"
    first = run_train(spss, out, _cfg(tiny, spss, out, 2, "plan", checkpoint_every=2))
    with pytest.raises(ConfigMismatch, match=r"holds an `infu train` run with other settings \(train.lr: 0.001 then, "
                                             r"0.05 now\): .*--overwrite to start over"):
        run_train(spss, out, _cfg(tiny, spss, out, 4, "plan", lr=0.05, checkpoint_every=2))
    longer = run_train(spss, out, _cfg(tiny, spss, out, 4, "plan", checkpoint_every=4, log_every=2))
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert (first["steps"], longer["steps"]) == (2, 4) and [r["step"] for r in log] == [1, 2, 4]
    fresh = run_train(spss, out, _cfg(tiny, spss, out, 2, "plan", lr=0.05, checkpoint_every=2).updated(
        {"export_published": True, "export_comfyui": True}), overwrite=True)
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert fresh["steps"] == 2 and [r["step"] for r in log] == [1, 2]
    assert json.loads((out / "run.json").read_text())["settings"]["train.lr"] == 0.05
    # a stage-1 model is published as sim_stage1, and written for ComfyUI's node beside it
    assert (out / "published" / "sim_stage1" / "InfuseNetModel").is_dir()
    assert sorted(p.name for p in (out / "comfyui" / "sim_stage1").iterdir()) == [
        "image_proj_model.bin", "infusenet_sim_bf16.safetensors", "infusenet_sim_fp8e4m3fn.safetensors"]


@pytest.mark.slow  # quick: two gloo workers under DDP then FSDP, without Ray Train (below)
def test_two_fsdp_workers_on_ray_train_take_the_steps_of_one_and_resume_on_one(tiny, spss, tmp_path, ray_local):
    """`infu train` with ray.num_workers 2 (FSDP over gloo) against one worker accumulating the same
    global batch: the same weights. Ray Train records the checkpoints: `infu train` again on the same
    folder resumes the latest on one worker, and keeps only the newest keep_checkpoints."""
    from pipelines.train import run_train

    kw = dict(loader="plan", global_batch_size=4, lr=1e-3, checkpoint_every=2)
    one = train_loop(_cfg(tiny, spss, tmp_path / "one", 4, **kw))
    said = []
    res = run_train(spss, tmp_path / "two", _cfg(tiny, spss, tmp_path / "two", 2, ray={"num_workers": 2, "fsdp": True},
                                                 **kw), log=said.append)
    assert res["steps"] == 2 and np.isfinite(res["final_loss"])
    assert [ln.split("  ")[0] for ln in said if ln.startswith("train: step")] == ["train: step 1/2", "train: step 2/2"]
    log = [json.loads(ln) for ln in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["workers"] for r in log] == [2, 2]
    from pipelines.report import write_report

    (tmp_path / "two" / "checkpoints" / "step-00000003.tmp").mkdir()  # what a killed save leaves
    page = write_report(tmp_path / "two").read_text()   # the loss and lr curves, the run's numbers
    assert page.count("<svg") == 1 and "flow-matching loss" in page and "step-00000002" in page
    assert "step-00000003" not in page, "a half-written checkpoint is not listed"
    assert [r["loss"] for r in log] == pytest.approx(one["losses"][:2], rel=1e-5), "loss averaged over workers"
    ones, start = _weights(tmp_path / "one" / "final"), _weights(tmp_path / "two" / "checkpoints" / "step-00000002")
    assert _relative_gap(ones, start) > 1e-4, "the weights move after step 2: the comparison below is not vacuous"
    pipe = InfUPipeline.from_pretrained(tiny["base"], tmp_path / "two" / "checkpoints" / "step-00000002",
                                        face_analyzer={"backend": "dlib"})  # what FSDP saved is a plain model
    assert pipe.infusenet.controlnet_blocks[0].weight.shape == ones["infusenet.controlnet_blocks.0.weight"].shape

    said.clear()  # the FSDP checkpoint, resumed on one worker
    run_train(spss, tmp_path / "two", _cfg(tiny, spss, tmp_path / "two", 4, keep_checkpoints=1, **kw), log=said.append)
    assert [ln.split("  ")[0] for ln in said if ln.startswith("train: step")] == ["train: step 3/4", "train: step 4/4"]
    log = [json.loads(ln) for ln in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["workers"]) for r in log] == [(1, 2), (2, 2), (3, 1), (4, 1)]
    assert [r["loss"] for r in log[2:]] == pytest.approx(one["losses"][2:], rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").glob("step-*")) == ["step-00000004"]
    twos = _weights(tmp_path / "two" / "final")
    assert _relative_gap(ones, twos) < 1e-5 and _relative_gap(ones, twos, per_tensor=True) < 1e-4


def _two_workers(rank, cfgs, store, out):
    """One process of a 2-worker gloo group: runs each config in turn, saves its weights after the first."""
    import torch
    import torch.distributed as dist

    from pipelines.train import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    for k, cfg in enumerate(cfgs):
        trainer = Trainer(cfg)
        trainer.run()
        if k == 0:
            torch.save({n: v.detach().clone() for n, v in trainer.model.module.state_dict().items()},
                       f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ddp_workers_hold_one_model_and_fsdp_resumes_it(tiny, spss, tmp_path):
    """Two DDP workers (gloo) hold identical weights; their checkpoint resumes under FSDP on two
    workers (optimizer state sent from worker 0) and ends where one worker alone does."""
    import torch
    import torch.multiprocessing as mp

    kw = dict(loader="plan", global_batch_size=4)
    ddp = _cfg(tiny, spss, tmp_path / "two", 2, ray={"fsdp": False}, **kw)
    fsdp = _cfg(tiny, spss, tmp_path / "two", 4, ray={"fsdp": True}, **kw)
    mp.spawn(_two_workers, args=([ddp, fsdp], str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a), "both ranks hold the same weights after training"
    saved = _weights(tmp_path / "two" / "checkpoints" / "step-00000002")
    assert saved.keys() == a.keys() and all(torch.equal(a[k], v) for k, v in saved.items())
    train_loop(_cfg(tiny, spss, tmp_path / "one", 4, **kw))
    assert _relative_gap(_weights(tmp_path / "one" / "final"), _weights(tmp_path / "two" / "final")) < 1e-5


def test_plan_gives_every_worker_its_share_of_the_same_global_batches(spss):
    from pipelines.train import batch_plan

    files = [str(spss / "kept" / "part-0.parquet")]

    def ids(it, n):
        return [[r["id"] for r in next(it)] for _ in range(n)]

    one = ids(batch_plan(files, ["id", "bucket"], 1, seed=3, per_step=4), 8)
    two = [ids(batch_plan(files, ["id", "bucket"], 1, seed=3, rank=r, world=2, per_step=4), 4) for r in (0, 1)]
    for step in range(2):  # step s: micro-batches 4s..4s+3; worker 0 trains the first two, worker 1 the others
        assert one[4 * step:4 * step + 4] == two[0][2 * step:2 * step + 2] + two[1][2 * step:2 * step + 2]
    resumed = ids(batch_plan(files, ["id", "bucket"], 1, seed=3, rank=1, world=2, per_step=4, skip=2), 2)
    assert resumed == two[1][2:]
    with pytest.raises(ValueError, match="cannot be shared"):
        next(batch_plan(files, ["id"], 1, seed=3, world=3, per_step=4))


def test_bf16_base_with_8bit_adam_and_full_checkpointing_trains_on_cpu(tiny, spss, tmp_path):
    """The memory options together: bf16 frozen base, fp32 trainables under autocast, 8-bit AdamW
    states, gradient checkpointing of InfuseNet and the base."""
    import torch

    from pipelines.train import Trainer

    cfg = _cfg(tiny, spss, tmp_path / "small", 2, loader="plan", optimizer="adamw_8bit",
               model={"dtype": "bfloat16", "gradient_checkpointing": "all"})
    trainer = Trainer(cfg)
    res = trainer.run()
    assert np.isfinite(res["losses"]).all()
    assert trainer.base.transformer.dtype == torch.bfloat16 and trainer.base.vae.dtype == torch.bfloat16
    params = list(trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    # bitsandbytes keeps tensors under 4096 elements in 32 bits: the large ones are 8-bit
    assert {s["state1"].dtype for s in trainer.opt.state.values()} == {torch.uint8, torch.float32}
    again = train_loop(cfg.updated({"train": {"max_steps": 3}}))  # resumes from the 8-bit state
    assert again["step"] == 3 and np.isfinite(again["losses"]).all()


def test_uneven_global_batch_and_busy_cpus_are_clear_errors(tiny, spss, tmp_path, ray_local):
    from pipelines.train.launch import check_cpus

    cfg = _cfg(tiny, spss, tmp_path, 1, global_batch_size=3, ray={"num_workers": 2})
    with pytest.raises(ValueError, match="multiple of the 2 worker"):
        cfg.batch_shape()
    with pytest.raises(ValueError, match="leave none"):
        check_cpus(cfg.ray, "ray")


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
    cfg = _cfg(tiny, spss, tmp_path / "cached", 3).updated(
        {"cache": {"enabled": True, "latents": True, "dir": str(tmp_path / "cache")}})
    counts = build_cache(cfg)
    assert counts["texts"] == 9 and counts["rows"] == 6 and counts["skipped_missing_embedding"] == 1
    shards = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert shards == ["_shared.safetensors", "cache.json", "part-0.safetensors"], "one shard per Parquet file"
    assert build_cache(cfg)["shards_kept"] == 1, "a built shard is not built again"

    def no_encoder(*a, **k):
        raise AssertionError("the text encoders ran although their outputs are cached")

    monkeypatch.setattr(FluxPipeline, "encode_prompt", no_encoder)
    cached = train_loop(cfg)
    assert cached["losses"] == plain["losses"]
