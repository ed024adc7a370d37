"""Outputs in object storage (#34, the write side for `infu curate`): an S3-compatible server on
127.0.0.1 (S3's semantics: no rename, no lock, listing after write). The same rows as on disk; a
rerun resumes; kill -9 then rerun gives the uninterrupted result; a dead run's late object never
counts; --overwrite removes only what the job wrote; each mistake with an output bucket is one line."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from curation.engine import ALIVE
from curation.registry import spss_schema
from curation import samples
from infu_model.storage import ObjectPath, as_path, write_parquet
from pipelines.job import dedup_and_finalize, parquet_files, read_column
from test_boundaries import spss_rows
from s3_server import S3rver
from test_curate import EXPECTED, SPINE_ONLY, _many_photos, outcome

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def rows(uri: str, sub: str, columns: list[str]) -> list[dict]:
    files = parquet_files(ObjectPath(uri) / sub)
    return read_column(files, columns).to_pylist()


def bucket_outcome(uri: str) -> list[tuple]:
    cols = ["id", "status", "reason", "duplicate_of"]
    return sorted(tuple(r[c] for c in cols) for sub in ("kept", "rejected") for r in rows(uri, sub, cols))


def kept_digest(out) -> list[str]:
    return sorted(hashlib.sha1(r["image"]).hexdigest() for r in rows(str(out), "kept", ["image"]))


def curate(s3, src: str, out: str, cfg: Path, *extra, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "infu"), "curate", "--source", f"folder:sample={src}", "--out", out,
                           "--config", str(cfg), *extra], capture_output=True, text=True,
                          env={**s3.run_env(), **(env or {})}, timeout=600)


def curate_here(src, out, cfg: Path, label: str = "sample") -> dict:
    """A disk reference: the same config through the job's library call, on the session's Ray (what is
    compared is the output, not the command)."""
    from pipelines.curate import run_curate
    from pipelines.job import SourceSpec
    from pipelines.jobs import load_config

    return run_curate([SourceSpec("folder", label, str(src))], out, load_config("curate", cfg), log=lambda m: None)


@pytest.mark.slow
def test_curate_into_a_bucket_writes_what_it_writes_on_disk_resumes_and_overwrites_only_its_own(
        sample_dir, ray_local, s3_env, tmp_path):
    s3 = s3_env
    uri = s3.upload(sample_dir, f"{s3.bucket('photos')}/samples")
    out = f"{s3.bucket('curated')}/run1"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**SPINE_ONLY, "progress": False}))
    curate_here(sample_dir, tmp_path / "disk", cfg)
    in_bucket = curate(s3, uri, out, cfg)
    assert in_bucket.returncode == 0, in_bucket.stderr[-3000:]
    assert bucket_outcome(out) == outcome(tmp_path / "disk") and len(bucket_outcome(out)) == 20
    assert kept_digest(out) == kept_digest(tmp_path / "disk")  # the original bytes, as on disk
    stats = json.loads(ObjectPath(out + "/stats.json").read_text())
    assert stats["adds_up"] and stats["kept"] == 10 and stats["duplicate_ids"] == 0
    keys = s3.keys("curated")
    assert {"run1/report.html", "run1/run.json", "run1/config.yaml", "run1/_work/logs/curate.log"} <= set(keys)
    assert "run1/_work/live" not in keys, "the run ended: its heartbeat is gone, the output is free"
    assert not [k for k in keys if k.startswith(("run1/_work/candidates/", "run1/_work/rejected/"))
                and k.endswith(".parquet")], "every worker object was published or removed"

    again = curate(s3, uri, out, cfg)  # the same command: nothing left to do, the same output
    assert again.returncode == 0 and bucket_outcome(out) == outcome(tmp_path / "disk"), again.stderr[-2000:]
    s3.client().delete_object(Bucket="curated", Key="run1/report.html")
    report = subprocess.run([str(BIN / "infu"), "report", out], capture_output=True, text=True, env=s3.run_env())
    assert report.returncode == 0 and f"wrote {out}/report.html" in report.stdout, report.stderr[-2000:]
    assert 'data-funnel="kept">10<' in ObjectPath(out + "/report.html").read_text()

    s3.client().put_object(Bucket="curated", Key="run1/my-notes.txt", Body=b"mine")
    s3.client().put_object(Bucket="curated", Key="elsewhere/keep.txt", Body=b"mine")
    stricter = tmp_path / "s.yaml"
    stricter.write_text(yaml.safe_dump({**SPINE_ONLY, "progress": False, "filters": {"min_side": 400}}))
    refused = curate(s3, uri, out, stricter)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr
    redone = curate(s3, uri, out, stricter, "--overwrite")
    assert redone.returncode == 0, redone.stderr[-3000:]
    keys = s3.keys("curated")
    assert {"run1/my-notes.txt", "elsewhere/keep.txt"} <= set(keys), "objects the job did not write stay"
    reasons = [r for _, _, r, _ in bucket_outcome(out)]
    assert reasons.count("low_resolution") > 1 and len(reasons) == 20


@pytest.fixture(scope="module")
def s3rver():
    server = S3rver()
    yield server
    server.stop()


@pytest.mark.slow
def test_curate_bucket_to_bucket_on_a_second_s3_implementation_keeps_what_disk_keeps(sample_dir, s3rver, tmp_path,
                                                                                      monkeypatch):
    """s3rver (node.js, not moto) keeps an aws-chunked upload's framing as the object's bytes. With the
    client's checksums as the AWS SDK's default has them, the job stops at its first write in one line
    naming the store's behaviour and the setting; with ours, bucket to bucket keeps what disk keeps."""
    uri = s3rver.upload(sample_dir, f"{s3rver.bucket('photos')}/samples")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stages: []\nprogress: false\n")   # the cheap filters: EXPECTED is the disk result
    out = f"{s3rver.bucket('curated')}/run1"
    framed = curate(s3rver, uri, out, cfg, env={"AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_SUPPORTED"})
    lines = [ln for ln in framed.stderr.splitlines() if ln.startswith("Error:")]
    assert framed.returncode == 1 and len(lines) == 1 and "Traceback" not in framed.stderr, framed.stderr[-3000:]
    assert "kept the aws-chunked upload's framing" in lines[0] and \
        "AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED (now WHEN_SUPPORTED)" in lines[0], lines[0]
    done = curate(s3rver, uri, f"{s3rver.bucket('second')}/run1", cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    for k, v in s3rver.env.items():
        monkeypatch.setenv(k, v)
    got = {Path(r["path"]).stem: (r["status"], r["reason"])
           for sub in ("kept", "rejected") for r in rows("s3://second/run1", sub, ["path", "status", "reason"])}
    assert got == EXPECTED
    stats = json.loads(ObjectPath("s3://second/run1/stats.json").read_text())
    assert stats["adds_up"] and "run1/_work/live" not in s3rver.keys("second")


@pytest.mark.slow
def test_kill_9_mid_curate_into_a_bucket_then_rerun_gives_the_uninterrupted_result(ray_local, s3_env, tmp_path):
    s3 = s3_env
    data = tmp_path / "data"
    data.mkdir()
    _many_photos(data, 120)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**SPINE_ONLY, "output": {"rows_per_file": 6}, "quality": {"resources": {"batch_size": 3}},
                                   "ray": {"num_cpus": 2, "object_store_memory": 300_000_000}, "progress": False}))
    out = f"{s3.bucket('killed')}/out"
    env = {**s3.run_env(), "INFU_BUCKET_STALE_S": "2"}
    proc = subprocess.Popen([str(BIN / "infu"), "curate", "--source", f"folder={data}", "--out", out, "--config",
                             str(cfg), "--quiet"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = lambda: [k for k in s3.keys("killed") if k.startswith("out/_work/candidates/") and k.endswith(".parquet")]  # noqa: E731
    deadline = time.time() + 180
    while time.time() < deadline and len(written()) < 3:
        assert proc.poll() is None, "the run finished before it could be killed; make the input bigger"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-run; its Ray workers outlive it for seconds
    proc.wait()
    assert len(written()) >= 3 and "out/stats.json" not in s3.keys("killed")
    time.sleep(2.5)  # its heartbeat is stale: the output is free

    rerun = subprocess.run([str(BIN / "infu"), "curate", "--source", f"folder={data}", "--out", out, "--config",
                            str(cfg), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    curate_here(data, tmp_path / "clean", cfg, label="folder")
    assert bucket_outcome(out) == outcome(tmp_path / "clean")
    stats = json.loads(ObjectPath(out + "/stats.json").read_text())
    assert stats["adds_up"] and stats["inputs"] == 120 and stats["duplicate_ids"] == 0
    assert kept_digest(out) == kept_digest(tmp_path / "clean")


def test_overwrite_in_a_bucket_removes_only_what_the_job_wrote(s3_env, tmp_path):
    """Quick (in-process): --overwrite clears the job's own objects and keeps a user's, also those whose
    names share a prefix with the job's folders (``run1/kept-notes.txt``, ``run1/_work-mine``)."""
    from pipelines.jobs import load_config
    from pipelines.job import Layout, SourceSpec, claim_output, prepare_out

    out = f"{s3_env.bucket('mixed')}/run1"
    cfg, specs = load_config("curate"), [SourceSpec("folder", "folder", str(tmp_path))]
    c = s3_env.client()
    with claim_output(out, "curate") as claim:
        prepare_out(Layout(out), claim, cfg, specs, False)
        for key in ("run1/kept/part-a.parquet", "run1/rejected/part-b.parquet", "run1/stats.json",
                    "run1/_work/manifest/m.parquet"):
            c.put_object(Bucket="mixed", Key=key, Body=b"written by the job")
        mine = ["run1/kept-notes.txt", "run1/_work-mine/x.txt", "run1/my-notes.txt", "run2/kept/keep.parquet"]
        for key in mine:
            c.put_object(Bucket="mixed", Key=key, Body=b"mine")
        prepare_out(Layout(out), claim, cfg.updated({"filters": {"min_side": 400}}), specs, True)
    keys = set(s3_env.keys("mixed"))
    assert set(mine) <= keys, sorted(keys)
    assert not keys & {"run1/kept/part-a.parquet", "run1/rejected/part-b.parquet", "run1/stats.json",
                       "run1/_work/manifest/m.parquet"}, sorted(keys)


def test_a_dead_runs_late_object_is_never_counted(s3_env, tmp_path):
    """A killed run's worker finishes an object after the rerun sealed the output (its lease check
    passed just before): the object lands, but the rerun neither counts it nor publishes it."""
    from pipelines.jobs import load_config
    from pipelines.job import DedupOptions, Layout, SourceSpec, claim_output, prepare_out
    from pipelines.sink import RowSink, Superseded, content_name

    out = f"{s3_env.bucket('late')}/out"
    cfg, specs = load_config("curate"), [SourceSpec("folder", "folder", str(tmp_path))]
    killed, rerun = Layout(out), Layout(out)
    with claim_output(out, "curate") as claim:  # (a killed driver's record is taken over once stale)
        prepare_out(killed, claim, cfg, specs, False)
        late = RowSink(killed.candidates, killed.parts_rejected, 4, False, spss_schema(), lease=killed.lease)
        first = pa.Table.from_pylist([{**spss_rows(1)[0], "status": ALIVE}], schema=spss_schema())
        late.write([first], None)  # before the rerun: it counts, and the rerun does not redo its row

    with claim_output(out, "curate") as claim:
        prepare_out(rerun, claim, cfg, specs, False)
        second = first.set_column(0, "id", pa.array(["late"]))
        with pytest.raises(Superseded, match="taken over by another run"):
            late.write([second], None)
        write_parquet(second, killed.candidates / killed.lease.tag(content_name(second)))  # the check passed before
        assert len(parquet_files(rerun.candidates)) == 2
        assert read_column(rerun.written(), ["id"])["id"].to_pylist() == [first["id"][0].as_py()]

        dedup_and_finalize(rerun, DedupOptions(False, 4, 8), False, spss_schema())
        assert read_column(parquet_files(rerun.kept), ["id"])["id"].to_pylist() == [first["id"][0].as_py()]
        assert not parquet_files(rerun.candidates), "the late object is removed at the end"


def takers(path, n: int = 6) -> list:
    """``n`` drivers taking ``path``'s live record at the same moment: each one's Heartbeat or refusal."""
    import threading

    from pipelines.bucket_runs import Heartbeat, LiveElsewhere

    start, got = threading.Barrier(n), []

    def take():
        start.wait()
        try:
            got.append(Heartbeat.take(path, "curate"))
        except LiveElsewhere as e:
            got.append(e)

    threads = [threading.Thread(target=take) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_of_drivers_starting_at_once_on_a_bucket_exactly_one_runs_and_a_dead_ones_record_is_taken_once(
        s3_env, monkeypatch):
    """moto has S3's conditional writes: the live record is created only if absent, so of six drivers
    starting at the same moment exactly one runs and the others name it; once it stops beating, six
    takers take its record over (only from the version they read) and again exactly one wins. Ages
    come from the store's clock, not the hosts'."""
    from pipelines.bucket_runs import Heartbeat, LiveElsewhere

    monkeypatch.setenv("INFU_BUCKET_STALE_S", "1.5")
    path = ObjectPath(f"{s3_env.bucket('racy')}/out") / "_work" / "live"
    first = takers(path)
    won = [h for h in first if isinstance(h, Heartbeat)]
    assert len(won) == 1 and all(isinstance(e, LiveElsewhere) and e.holder.get("run") == won[0].info["run"]
                                 for e in first if e is not won[0])
    won[0]._stop.set()  # it dies: no more beats, its record stays
    won[0]._thread.join()
    time.sleep(2.5)
    second = takers(path)
    again = [h for h in second if isinstance(h, Heartbeat)]
    assert len(again) == 1 and again[0].info["run"] != won[0].info["run"]
    assert json.loads(path.read_text())["run"] == again[0].info["run"]
    again[0].stop()
    assert not path.exists()


def test_a_heartbeat_that_cannot_be_written_for_a_while_keeps_beating(s3_env, monkeypatch, caplog):
    """Credentials being renewed, a store not answering: the beat is said in the log and tried again;
    the thread that keeps the run alive never dies of it."""
    from infu_model.storage import StorageError
    from pipelines import bucket_runs
    from pipelines.bucket_runs import Heartbeat

    monkeypatch.setattr(bucket_runs, "BEAT_S", 0.05)
    held = Heartbeat.take(ObjectPath(f"{s3_env.bucket('flaky')}/out") / "_work" / "live", "curate")
    def refused(*a, **k):
        raise StorageError("s3://flaky/out/_work/live: the credentials were refused or none were found")

    try:
        with monkeypatch.context() as m:
            m.setattr(bucket_runs, "put_if", refused)
            time.sleep(0.3)
            assert held._thread.is_alive() and "heartbeat not written" in caplog.text
    finally:
        held.stop()
    assert not held.path.exists()


def test_a_store_without_conditional_writes_falls_back_to_the_heartbeat_and_says_so(s3rver, monkeypatch, caplog):
    """s3rver ignores If-None-Match: detected once, said in the log, and a live run is still refused."""
    from pipelines.bucket_runs import Heartbeat, LiveElsewhere

    for k, v in s3rver.env.items():
        monkeypatch.setenv(k, v)
    path = ObjectPath(f"{s3rver.bucket('plain')}/out") / "_work" / "live"
    held = Heartbeat.take(path, "curate")
    try:
        assert not held.exclusive and "has no conditional writes" in caplog.text
        with pytest.raises(LiveElsewhere):
            Heartbeat.take(path, "curate")
    finally:
        held.stop()
    assert not path.exists() and not [k for k in s3rver.keys("plain") if "probe" in k], "the probe is removed"


@pytest.mark.parametrize("case", ["no bucket", "the bucket itself", "a prefix of ones own", "a live run"])
def test_an_output_bucket_mistake_is_one_line(s3, sample_dir, tmp_path, case):
    s3.bucket("taken")
    out = {"no bucket": "s3://no-such-bucket/out", "the bucket itself": "s3://taken",
           "a prefix of ones own": "s3://taken/photos", "a live run": "s3://taken/busy"}[case]
    if case == "a prefix of ones own":
        s3.client().put_object(Bucket="taken", Key="photos/a.jpg", Body=b"mine")
    if case == "a live run":
        s3.client().put_object(Bucket="taken", Key="busy/run.json", Body=json.dumps({"job": "curate"}).encode())
        s3.client().put_object(Bucket="taken", Key="busy/_work/live", Body=json.dumps(
            {"run": "r1", "job": "curate", "host": "node-7", "pid": 42, "beat": time.time()}).encode())
    before = s3.keys("taken")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**SPINE_ONLY, "progress": False}))
    done = curate(s3, str(sample_dir), out, cfg)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")]
    assert done.returncode != 0 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    expected = {"no bucket": "the bucket s3://no-such-bucket does not exist",
                "the bucket itself": "give a prefix inside the bucket",
                "a prefix of ones own": "is not empty and holds no earlier `infu curate` output",
                "a live run": "in use by a live `infu curate` run (run r1, host node-7, pid 42"}[case]
    assert expected in lines[0], lines[0]
    assert s3.keys("taken") == before, "nothing was written"


@pytest.mark.slow
def test_caption_and_synth_read_from_a_bucket_and_write_into_one_as_on_disk(ray_local, s3_env, tmp_path):
    """The chain after curate on a bucket: the same captions, and the same SPMS pairs (ids, decisions,
    target bytes), as the same jobs on disk. The commands run on the bucket; the disk reference is the
    same jobs' library calls (what the command is, is not what is compared)."""
    from infu_model.tiny import make_tiny
    from pipelines.caption import run_caption
    from pipelines.jobs import load_config
    from pipelines.synth import run_synth
    from test_synth import spss_row

    s3, tiny = s3_env, make_tiny(tmp_path / "tiny")
    disk = tmp_path / "spss"
    (disk / "kept").mkdir(parents=True)
    rows = [spss_row(samples.grace_hopper(), "grace.png", gender="female", identity="hopper"),
            spss_row(samples.astronaut(), "astronaut.png")]
    write_parquet(pa.Table.from_pylist(rows, schema=spss_schema()), disk / "kept" / "part-0.parquet")
    bucket = s3.upload(disk, f"{s3.bucket('chain')}/spss")
    cap_cfg, syn_cfg = tmp_path / "caption.yaml", tmp_path / "synth.yaml"
    cap_cfg.write_text(yaml.safe_dump({"captioners": [], "progress": False}))
    syn_cfg.write_text(yaml.safe_dump({
        "progress": False, "model": {"base": str(tiny["base"]), "path": str(tiny["infu"]), "dtype": "float32"},
        "generation": {"width": 64, "height": 64, "steps": 3, "images_per_call": 2},
        "prompts": {"per_source": 2, "seeds_per_prompt": 1}, "output": {"rows_per_file": 3}}))
    run_caption(str(disk), tmp_path / "captioned", load_config("caption", cap_cfg), log=lambda m: None)
    run_synth(tmp_path / "captioned", tmp_path / "spms", load_config("synth", syn_cfg), log=lambda m: None)
    for cmd in (["caption", bucket, "--out", "s3://chain/captioned", "--config", str(cap_cfg)],
                ["synth", "--spss", "s3://chain/captioned", "--out", "s3://chain/spms", "--config", str(syn_cfg)]):
        done = subprocess.run([str(BIN / "infu"), *cmd], capture_output=True, text=True, env=s3.run_env(), timeout=600)
        assert done.returncode == 0, (cmd[0], done.stderr[-3000:])
    outs = {}
    for where, root in (("disk", str(tmp_path)), ("bucket", "s3://chain")):
        outs[where] = (
            sorted((r["id"], str(r["captions"])) for r in rows_of(f"{root}/captioned", ["id", "captions"])),
            sorted((r["pair_id"], r["status"], r["reason"], hashlib.sha1(r["target_image"]).hexdigest())
                   for r in rows_of(f"{root}/spms", ["pair_id", "status", "reason", "target_image"])))
    assert outs["bucket"] == outs["disk"] and len(outs["disk"][0]) == 2 and len(outs["disk"][1]) == 4
    stats = json.loads(ObjectPath("s3://chain/spms/stats.json").read_text())
    assert stats["adds_up"] and stats["pairs"] == 4


def rows_of(root: str, columns: list[str]) -> list[dict]:
    """Kept and rejected rows of a job's output, local or in a bucket (SPMS columns read as they are)."""
    from pipelines.job import dataset

    files = parquet_files(as_path(root) / "kept") + parquet_files(as_path(root) / "rejected")
    return dataset(files).to_table(columns=columns).to_pylist()


@pytest.mark.slow
def test_infu_train_into_a_bucket_checkpoints_on_ray_train_storage_and_resumes_on_one_worker(s3_env, tmp_path):
    """`infu train` with its output in a bucket and no folder the workers share: Ray Train uploads each of
    two FSDP workers' part of every checkpoint and records it; the same command on one worker resumes from
    that record, with the losses and final weights of one worker's uninterrupted run on disk."""
    from curation.engine import plain
    from infu_model.tiny import make_tiny
    from pipelines.train import train_loop
    from test_boundaries import spss_rows, write_spss
    from test_train_job import _cfg, _relative_gap, _weights

    s3, tiny = s3_env, make_tiny(tmp_path / "tiny")
    data = write_spss(tmp_path / "spss", spss_rows(8))
    kw = dict(loader="plan", global_batch_size=4, checkpoint_every=2)
    one = train_loop(_cfg(tiny, data, tmp_path / "one", 4, **kw))
    out = f"{s3.bucket('trained')}/stage1"

    def train(steps: int, **options) -> list[str]:
        cfg = tmp_path / "train.yaml"
        cfg.write_text(yaml.safe_dump(plain(_cfg(tiny, data, out, steps, **kw, **options))))
        done = subprocess.run([str(BIN / "infu"), "train", "--config", str(cfg)], capture_output=True, text=True,
                              env=s3.run_env(), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return [ln.split("  ")[0] for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("train: step")]

    def log() -> list[tuple]:
        text = ObjectPath(f"{out}/train_log.jsonl").read_text()
        return [(r["step"], r["workers"], r["loss"]) for r in map(json.loads, text.splitlines())]

    assert train(2, ray={"num_workers": 2, "fsdp": True}) == ["train: step 1/2", "train: step 2/2"]
    keys = {k.split("/", 1)[1] for k in s3.keys("trained")}
    step2 = {k.split("/", 2)[2] for k in keys if k.startswith("checkpoints/step-00000002/")}
    assert {"rank-0.json", "rank-1.json", "trainer_state.json", "optimizer.pt", "infu.json"} <= step2, step2
    assert {"train_log.jsonl", "final/infu.json", "run.json", "config.yaml", "report.html"} <= keys
    assert "_work/live" not in keys, "the run's heartbeat is gone once it ended"
    assert [(s, w) for s, w, _ in log()] == [(1, 2), (2, 2)]

    assert train(4, keep_checkpoints=1) == ["train: step 3/4", "train: step 4/4"], "resumed from step 2"
    assert [(s, w) for s, w, _ in log()] == [(1, 2), (2, 2), (3, 1), (4, 1)]
    assert [loss for *_, loss in log()] == pytest.approx(one["losses"], rel=1e-5)
    assert sorted({k.split("/")[2] for k in s3.keys("trained") if k.startswith("stage1/checkpoints/step-")}) == \
        ["step-00000004"], "Ray Train keeps the newest keep_checkpoints in the bucket"
    from infu_model.storage import download_tree

    final = _weights(download_tree(f"{out}/final", tmp_path / "final"))
    assert _relative_gap(_weights(tmp_path / "one" / "final"), final) < 1e-5


@pytest.mark.slow
def test_the_tiny_pipeline_runs_with_every_path_in_a_bucket_as_on_disk(sample_dir, ray_local, s3_env, tmp_path):
    """`infu run` of configs/pipeline-tiny.yaml with its sources, FLUX base, identities and root all in a
    bucket (the weights stage 1 trains there are what synth and eval load): the same rows, losses and
    weights at every stage as the same file with every path on disk (training's ray loader streams the
    captioned rows from the bucket on Ray Train's workers, which get the driver's AWS settings). The
    command runs on the bucket in a process of its own; the disk reference runs in this one (on the
    session's Ray)."""
    from click.testing import CliRunner

    from infu_model.storage import download_tree
    from infu_model.tiny import make_tiny
    from pipelines.cli import main
    from test_train_job import _relative_gap, _weights

    s3, tiny = s3_env, make_tiny(tmp_path / "tiny")
    ids = tmp_path / "ids"
    ids.mkdir()
    samples.grace_hopper().save(ids / "grace.png")
    (ids / "ids.yaml").write_text(yaml.safe_dump({"identities": [{"name": "grace", "gender": "female",
                                                                  "reference": "grace.png"}]}))
    s3.bucket("inputs")
    given = {"disk": {"sources": str(sample_dir), "base": str(tiny["base"]), "ids": str(ids), "root": str(tmp_path / "run")},
             "bucket": {"sources": s3.upload(sample_dir, "s3://inputs/sample"), "base": s3.upload(tiny["base"], "s3://inputs/base"),
                        "ids": s3.upload(ids, "s3://inputs/ids"), "root": f"{s3.bucket('runs')}/tiny"}}
    spec = yaml.safe_load((ROOT / "configs" / "pipeline-tiny.yaml").read_text())
    spec["stages"]["curate"] = {"set": {"stages": [{"name": "faces", "backend": "dlib"}]}}
    train = spec["stages"]["train_stage1"]["set"]  # one small checkpoint to upload
    train["train"]["checkpoint_every"] = 4
    train["model"]["projection"] = {"dim": 32, "depth": 1, "dim_head": 8, "heads": 4, "ff_mult": 2}
    bench = tmp_path / "benchmark.txt"   # what is compared is where eval reads and writes, not 200 prompts
    bench.write_text("a portrait in a garden\na portrait on a beach\na portrait at night\n")
    spec["stages"]["eval"]["set"]["benchmark"] = str(bench)
    results = {}
    for where, p in given.items():
        spec.update(root=p["root"], base=p["base"], sources=[f"folder:sample={p['sources']}"])
        spec["stages"]["eval"]["ids"] = p["ids"]
        (tmp_path / f"{where}.yaml").write_text(yaml.safe_dump(spec))
        if where == "disk":
            here = CliRunner().invoke(main, ["run", str(tmp_path / "disk.yaml"), "--quiet"])
            assert here.exit_code == 0, here.output[-3000:]
        else:
            done = subprocess.run([str(BIN / "infu"), "run", str(tmp_path / f"{where}.yaml")], capture_output=True,
                                  text=True, env=s3.run_env(), timeout=900)
            assert done.returncode == 0, (where, done.stdout[-3000:], done.stderr[-3000:])
        root = as_path(p["root"])
        log = [json.loads(ln) for ln in (root / "train-stage1" / "train_log.jsonl").read_text().splitlines()]
        results[where] = {
            "curated": sorted((r["id"], r["status"], r["reason"]) for r in rows_of(str(root / "curated"),
                                                                                  ["id", "status", "reason"])),
            "captioned": sorted((r["id"], str(r["captions"])) for r in rows_of(str(root / "captioned"), ["id", "captions"])),
            "losses": [r["loss"] for r in log],
            "spms": sorted((r["pair_id"], r["status"], r["reason"]) for r in rows_of(str(root / "spms"),
                                                                                    ["pair_id", "status", "reason"])),
            "eval": json.loads((root / "eval" / "summary.json").read_text())["metrics"],
            "weights": _weights(download_tree(str(root / "train-stage1" / "final"), tmp_path / f"{where}-final")
                                if where == "bucket" else root / "train-stage1" / "final")}
    disk, bucket = results["disk"], results["bucket"]
    assert bucket["losses"] == pytest.approx(disk["losses"], rel=1e-6) and disk["losses"], (disk["losses"], bucket["losses"])
    assert _relative_gap(disk.pop("weights"), bucket.pop("weights")) < 1e-6
    assert bucket.pop("losses") and disk.pop("losses")
    assert bucket == disk and len(disk["curated"]) == 20 and disk["spms"]
    assert not [k for k in s3.keys("runs") if k.endswith("_work/live")], "every run's heartbeat is gone"
    assert "tiny/report.html" in s3.keys("runs")
