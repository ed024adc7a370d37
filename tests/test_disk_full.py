"""A full disk (#38): wherever the write fails (a Ray write task, the driver's finalise, a training
checkpoint), the run ends in one line naming the folder and the space free there, partial files
stay in the job's work folders, and once space is freed the same command resumes to the result of a
run that never ran short. The disks are small tmpfs mounts; the error shapes of the other write
sites (Ray's wrapping, Ray Train's, safetensors' and pyarrow's texts) are checked directly."""
import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from test_curate import _many_photos, outcome

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def small_disk(path: Path, size: int):
    """A tmpfs of ``size`` bytes at ``path``; yields a function that resizes it (freeing space)."""
    path.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                           text=True)
    if mount.returncode:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and mounts a small tmpfs for these tests: {mount.stderr.strip()}")
        pytest.skip(f"a small disk needs a tmpfs mount (root): {mount.stderr.strip()}")
    try:
        yield lambda new: subprocess.run(["mount", "-o", f"remount,size={new}", str(path)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def infu(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "infu"), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})


def one_line(said: str) -> str:
    errors = [ln for ln in said.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in said, said[-3000:]
    return errors[0]


def only_whole_files(out: Path) -> None:
    """What a stopped run leaves outside _work is whole: every Parquet file there reads."""
    for f in out.rglob("*.parquet"):
        if "_work" not in f.parts:
            pq.read_table(f)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    data = tmp_path_factory.mktemp("photos")
    _many_photos(data, 24)
    return data


@pytest.fixture(scope="module")
def curated(photos, tmp_path_factory):
    """The same curate with room to spare: its outcome and the size of its kept rows."""
    root = tmp_path_factory.mktemp("roomy")
    (root / "c.yaml").write_text(yaml.safe_dump({"stages": [], "progress": False, "output": {"rows_per_file": 6}}))
    done = infu("curate", "--source", f"folder={photos}", "--out", str(root / "out"), "--config", str(root / "c.yaml"),
                cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, outcome(root / "out"), sum(f.stat().st_size for f in (root / "out" / "kept").glob("*.parquet"))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["ray write task", "driver finalise"])
def test_a_full_disk_during_curate_is_one_line_and_the_rerun_resumes(curated, photos, tmp_path, where):
    root, expected, kept_bytes = curated
    # 192 KiB: the folder is claimed, the first candidate file does not fit. 1.5x the kept rows: every
    # candidate fits, the finalised copy of them does not
    size = 192 * 1024 if where == "ray write task" else int(kept_bytes * 1.5)
    disk = tmp_path / "disk"
    with small_disk(disk, size) as resize:
        out = disk / "out"
        cmd = ("curate", "--source", f"folder={photos}", "--out", str(out), "--config", str(root / "c.yaml"))
        short = infu(*cmd, cwd=tmp_path)
        assert short.returncode == 1
        line = one_line(short.stderr)
        assert line.startswith(f"Error: no space left on device writing to {out}") and "free there now" in line, line
        assert line.endswith("free some space, then rerun the same command to resume"), line
        assert not (out / "stats.json").exists() and (out / "_work" / "runs.jsonl").read_text().count('"error"') == 1
        only_whole_files(out)
        resize(64 * 2**20)
        again = infu(*cmd, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert outcome(out) == expected
        assert json.loads((out / "stats.json").read_text())["adds_up"]


@pytest.mark.slow
def test_a_full_disk_at_a_training_checkpoint_is_one_line_and_the_rerun_resumes(tmp_path):
    from test_interrupts import _Factory
    from test_train_job import _cfg, spss

    from infu_model.tiny import make_tiny
    from curation.engine import plain

    models, data = {"base": make_tiny(tmp_path / "tiny")["base"]}, spss.__wrapped__(_Factory(tmp_path))
    disk = tmp_path / "disk"
    out = disk / "train"
    cfg = tmp_path / "s1.yaml"
    cfg.write_text(yaml.safe_dump(plain(_cfg(models, data, out, 4, loader="plan", checkpoint_every=2,
                                             ray={"max_failures": 0}))))
    with small_disk(disk, 256 * 1024) as resize:  # the run's folder is made; no checkpoint fits
        short = infu("train", "--config", str(cfg), cwd=tmp_path)
        assert short.returncode == 1
        line = one_line(short.stderr)
        assert line.startswith(f"Error: no space left on device writing to {out}"), line
        assert not (out / "final").exists() and not list((out / "checkpoints").glob("step-????????"))
        resize(256 * 2**20)
        again = infu("train", "--config", str(cfg), cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert (out / "final").is_dir()


def test_a_full_disk_is_found_behind_what_wraps_it(tmp_path):
    """The shapes a full disk reaches the driver in: an OSError (its file named), Ray's copy of a task's
    OSError (its text as the filename), a training worker's failure inside Ray Train's error,
    safetensors' Rust error text, pyarrow's text, a quota; anything else is not a full disk."""
    from ray.exceptions import RayTaskError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from pipelines.faults import disk_full_line

    f = tmp_path / "out" / "_work" / "x.parquet"
    f.parent.mkdir(parents=True)
    direct = OSError(errno.ENOSPC, "No space left on device", str(f))
    assert disk_full_line(direct, tmp_path).startswith(f"no space left on device writing to {f.parent}, ")
    task = RayTaskError("write", "Traceback ...", OSError(errno.ENOSPC, "Failed to write\nDetail: [errno 28]"))
    assert disk_full_line(task, tmp_path / "out").startswith(f"no space left on device writing to {tmp_path / 'out'}")
    rust = RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })')
    worker = WorkerGroupError("worker 0 failed", {0: rust})
    assert disk_full_line(worker, tmp_path).startswith("no space left on device")
    arrow = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert disk_full_line(arrow, tmp_path).startswith("no space left on device")
    quota = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert disk_full_line(quota, tmp_path / "gone" / "deeper").startswith("disk quota exceeded writing to ")
    assert disk_full_line(OSError(errno.EACCES, "Permission denied"), tmp_path) is None
    assert disk_full_line(ValueError("bad value"), tmp_path) is None


def test_the_cli_turns_a_full_disk_met_anywhere_in_a_job_into_its_one_line(sample_dir, tmp_path, monkeypatch):
    """Quick (in-process): a job whose work meets ENOSPC ends in one line naming the folder and the
    space free there, saying the same command resumes; no traceback."""
    from dataclasses import replace

    from click.testing import CliRunner

    from pipelines.cli import main
    from pipelines.jobs import JOBS

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "kept" / "part-1.parquet"))

    monkeypatch.setitem(JOBS, "curate", replace(JOBS["curate"], run=full))
    (tmp_path / "c.yaml").write_text("stages: []\nprogress: false\n")
    r = CliRunner().invoke(main, ["curate", "--source", f"folder={sample_dir}", "--out", str(tmp_path / "out"),
                                  "--config", str(tmp_path / "c.yaml")])
    line = one_line(r.output)
    assert r.exit_code == 1 and f"writing to {tmp_path / 'out' / 'kept'}" in line and "free there now" in line
    assert "rerun the same command to resume" in line, line
