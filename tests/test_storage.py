"""Datasets in object storage (#34, the read side): every adapter lists and reads a dataset under
s3:// as it does on disk (an S3-compatible server on 127.0.0.1: no rename, listing after write), and
`infu curate` from s3:// sources keeps and rejects the same rows for the same reasons. A bucket that
does not exist, credentials that are refused and a scheme with no filesystem are one line each."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.sources import make_source
from pipelines.jobs import load_config
from replicas import BUILDERS
from s3_server import S3Server
from test_curate import outcome

BIN = Path(sys.executable).parent


def listed(kind: str, root: str) -> list[dict]:
    src = make_source(kind, kind, root, load_config("curate").sources)
    src.check()
    rows = list(src.items())
    base = root if root.startswith("s3://") else str(Path(root).resolve())
    for r in rows:  # where the bytes are read from, and errors naming it, differ only by the root
        r["_uri"] = r["_uri"] and r["_uri"].replace(base, "ROOT")
        r["error"] = r["error"] and r["error"].replace(base, "ROOT")
    return sorted(rows, key=lambda r: (r["id"]))


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_adapter_lists_a_dataset_in_a_bucket_as_on_disk(kind, s3_env, tmp_path):
    BUILDERS[kind](tmp_path / kind)
    bucket = s3_env.bucket("ds-" + kind.replace("_", "-"))
    uri = s3_env.upload(tmp_path / kind, f"{bucket}/data/{kind}")
    on_disk, in_bucket = listed(kind, str(tmp_path / kind)), listed(kind, uri)
    assert on_disk and in_bucket == on_disk


@pytest.mark.slow
def test_curate_from_a_bucket_keeps_what_it_keeps_from_disk(sample_dir, ray_local, s3, tmp_path):
    """`infu curate` reading its photos from a bucket (the disk reference: the same config's library call)."""
    from test_bucket_outputs import curate, curate_here

    uri = s3.upload(sample_dir, f"{s3.bucket('photos')}/samples")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"stages": [], "progress": False}))
    curate_here(sample_dir, tmp_path / "disk", cfg)
    done = curate(s3, uri, str(tmp_path / "bucket"), cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    on_disk = outcome(tmp_path / "disk")
    assert outcome(tmp_path / "bucket") == on_disk and len(on_disk) == 20


@pytest.mark.parametrize("case", ["no bucket", "empty prefix", "refused credentials", "unknown scheme"])
def test_a_source_that_cannot_be_read_is_one_line(s3, tmp_path, case):
    src = {"no bucket": "s3://no-such-bucket/photos", "empty prefix": f"{s3.bucket('exists')}/nothing-here",
           "refused credentials": "s3://locked/photos", "unknown scheme": "ftp://host/photos"}[case]
    server = S3Server(unauthenticated_actions=2) if case == "refused credentials" else s3
    try:
        if case == "refused credentials":  # the bucket and a photo go in before the store starts checking keys
            server.bucket("locked")
            server.client().put_object(Bucket="locked", Key="photos/a.jpg", Body=b"x")
        done = subprocess.run([str(BIN / "infu"), "curate", "--source", f"folder={src}", "--out", str(tmp_path / "out")],
                              capture_output=True, text=True, env=server.run_env(), timeout=300)
    finally:
        if server is not s3:
            server.stop()
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert src in lines[0] and not (tmp_path / "out").exists(), lines[0]
    expected = {"no bucket": "the bucket 'no-such-bucket' does not exist", "empty prefix": "an empty or mistyped prefix",
                "refused credentials": "access denied (the credentials in use", "unknown scheme": "not a storage scheme"}[case]
    assert expected in lines[0], lines[0]



def test_training_reads_its_rows_and_encoder_cache_from_a_bucket_as_from_disk(s3_env, tmp_path, monkeypatch):
    """``data.parquet: s3://...``: the same batches, so the same losses, as the same rows on disk (the
    plan loader, in this process); the encoder cache is built from the bucket's rows too, and a cache
    kept in the bucket (``cache.dir: s3://...``) gives the same losses without running the encoders."""
    from diffusers import FluxPipeline

    import pyarrow as pa

    from curation.registry import spss_schema
    from infu_model.storage import write_parquet
    from infu_model.tiny import make_tiny
    from pipelines.train import build_cache, train_loop
    from test_boundaries import spss_rows
    from test_train_job import _cfg

    tiny = make_tiny(tmp_path / "tiny")
    disk = tmp_path / "spss"
    (disk / "kept").mkdir(parents=True)
    write_parquet(pa.Table.from_pylist(spss_rows(6), schema=spss_schema()), disk / "kept" / "part-0.parquet")
    bucket = s3_env.upload(disk, f"{s3_env.bucket('training')}/spss")
    runs = {}
    for where, data in (("disk", str(disk)), ("bucket", bucket)):
        cfg = _cfg(tiny, data, tmp_path / f"out-{where}", 3, "plan")
        runs[where] = train_loop(cfg)["losses"]
        runs[f"{where} cache"] = build_cache(cfg.updated({"cache": {"enabled": True}}))["shards_written"]
    assert runs["bucket"] == runs["disk"] and len(runs["disk"]) == 3
    assert runs["bucket cache"] == runs["disk cache"] == 1

    cfg = _cfg(tiny, bucket, tmp_path / "out-cached", 3, "plan").updated(
        {"cache": {"enabled": True, "latents": True, "dir": "s3://training/cache"}})
    assert build_cache(cfg)["shards_written"] == 1 and build_cache(cfg)["shards_kept"] == 1
    assert sorted(k for k in s3_env.keys("training") if k.startswith("cache/")) == [
        "cache/_shared.safetensors", "cache/cache.json", "cache/part-0.safetensors"]

    def no_encoder(*a, **k):
        raise AssertionError("the text encoders ran although their outputs are cached")

    monkeypatch.setattr(FluxPipeline, "encode_prompt", no_encoder)
    assert train_loop(cfg)["losses"] == runs["disk"]
