"""Ctrl-C and SIGTERM (#38): a run stopped mid-way keeps what finished, says in one line that the same
command resumes (naming the stage for `infu run`), exits 130 (143 for SIGTERM), records `interrupted`
in its folder's run log, and the rerun finishes with every input accounted for."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_curate import _many_photos

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PHOTOS = 40  # a run interrupted after 2 files of 6 rows still has most of its work ahead


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    data = tmp_path_factory.mktemp("photos")
    _many_photos(data, PHOTOS)
    return data


def interrupted(cmd, started, sig, tmp_path, group: bool):
    """Run ``cmd``, send ``sig`` once ``started()`` holds (to the process group, as a terminal's Ctrl-C
    does, or to the command alone, as a scheduler's SIGTERM does); returns the finished process."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with open(tmp_path / "out.txt", "w") as out:
        # SIGINT as a terminal leaves it: a test session started in the background (`cmd &`) ignores it,
        # and a child would inherit that
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 180
        while not started():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "out.txt").read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
        proc.wait(120)
    return proc, (tmp_path / "out.txt").read_text()


def ended(folder: Path) -> list[str]:
    return [json.loads(ln)["ended"] for ln in (folder / "_work" / "runs.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_ctrl_c_during_curate_keeps_what_finished_and_the_rerun_resumes(photos, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"progress": False, "output": {"rows_per_file": 6}}))
    out = tmp_path / "out"
    cmd = [str(BIN / "infu"), "curate", "--source", f"folder={photos}", "--out", str(out), "--config", str(cfg)]
    proc, said = interrupted(cmd, lambda: len(list((out / "_work" / "candidates").glob("*.parquet"))) >= 2,
                             signal.SIGINT, tmp_path, group=True)
    assert proc.returncode == 130, said[-3000:]
    assert said.rstrip().endswith("interrupted: rerun the same command to resume") and "Traceback" not in said
    assert ended(out) == ["interrupted"] and not (out / "stats.json").exists()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert again.returncode == 0, again.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["adds_up"] and stats["inputs"] == PHOTOS and ended(out) == ["interrupted", "ok"]


@pytest.mark.slow
def test_sigterm_during_infu_run_names_the_stage_and_exits_143(photos, tmp_path):
    spec = {"root": str(tmp_path / "root"), "sources": [f"folder={photos}"], "progress": False,
            "stages": {"curate": {"set": {"output": {"rows_per_file": 6}}}, "caption": {"set": {"captioners": []}}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    cands = tmp_path / "root" / "curated" / "_work" / "candidates"
    proc, said = interrupted([str(BIN / "infu"), "run", str(path)], lambda: len(list(cands.glob("*.parquet"))) >= 2,
                             signal.SIGTERM, tmp_path, group=False)
    assert proc.returncode == 143, said[-3000:]
    assert said.rstrip().endswith("interrupted in stage curate: rerun the same command to resume"), said[-2000:]
    assert ended(tmp_path / "root") == ["interrupted"]


@pytest.mark.slow
def test_ctrl_c_during_training_resumes_from_its_last_checkpoint(tmp_path):
    from test_train_job import spss, tiny  # noqa: F401 - the builders behind those fixtures

    from infu_model.tiny import make_tiny

    models = make_tiny(tmp_path / "tiny")
    data = spss.__wrapped__(_Factory(tmp_path)) if hasattr(spss, "__wrapped__") else None
    assert data is not None
    out = tmp_path / "train"
    cfg = tmp_path / "s1.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"base": str(models["base"]), "embedding_dim": 128, "dtype": "float32",
                  "projection": {"dim": 32, "depth": 1, "dim_head": 8, "heads": 4, "ff_mult": 2}},
        "data": {"parquet": str(data), "max_side": 32, "max_sequence_length": 16, "loader": "plan"},
        "train": {"lr": 1.0e-3, "global_batch_size": 2, "micro_batch_size": 1, "max_steps": 20, "warmup_steps": 1,
                  "checkpoint_every": 2, "log_every": 1},
        "output": str(out)}))
    cmd = [str(BIN / "infu"), "train", "--config", str(cfg)]
    # a tiny step takes a fraction of a second: 20 of them leave the interrupt seconds to land mid-run
    proc, said = interrupted(cmd, lambda: (out / "checkpoints" / "step-00000002").is_dir(), signal.SIGINT, tmp_path,
                             group=True)
    assert proc.returncode == 130, said[-3000:]
    assert said.rstrip().endswith("interrupted: rerun the same command to resume") and "Traceback" not in said
    assert ended(out) == ["interrupted"] and not (out / "final").exists()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "final").is_dir() and ended(out) == ["interrupted", "ok"]
    assert "train: step 1/20" not in again.stderr, "the rerun resumed from a checkpoint, not from step 0"


class _Factory:
    """pytest's tmp_path_factory, for calling a module fixture's function directly."""

    def __init__(self, root: Path):
        self.root = root

    def mktemp(self, name: str) -> Path:
        p = self.root / name
        p.mkdir()
        return p


@pytest.mark.slow
def test_a_second_run_on_a_live_runs_folder_is_refused_at_once(photos, tmp_path):
    """Two runs on one folder: the second is refused within seconds, naming the first (run id, host,
    pid, start), and writes nothing; the first finishes normally."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"progress": False, "output": {"rows_per_file": 6}}))
    out = tmp_path / "out"
    cmd = [str(BIN / "infu"), "curate", "--source", f"folder={photos}", "--out", str(out), "--config", str(cfg),
           "--quiet"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "_work" / "live").is_file() or not (out / "_work" / "live").read_text():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    holder = json.loads((out / "_work" / "live").read_text())
    t0 = time.time()
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("Error:")]
    assert second.returncode == 1 and len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert f"in use by a live `infu curate` run (run {holder['run']}, host {holder['host']}, pid {first.pid}, " \
           f"started {holder['started']})" in errors[0]
    # a refused command starts Python and reads the job table: 1.4-1.9 s on an idle machine, slower while
    # the first run and the suite's other worker share the 2 cores; the lock's wait would be the whole run
    assert took < 10, f"refused after {took:.1f} s"
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["adds_up"] and stats["inputs"] == PHOTOS
    assert ended(out) == ["ok"], "the second run did no work: the folder's run log holds the first alone"


HOLD = """
import sys, time
from pipelines.job import claim_output
claim_output(sys.argv[1], "curate")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_run_is_refused_while_another_process_holds_the_folder(tmp_path):
    """Quick: while a driver holds a folder's live lock, a claim from another process is refused in one
    line naming it (pid included); once that driver is gone (however it ended), the folder is free."""
    from pipelines.job import OutputRefused, claim_output

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputRefused, match=rf"in use by a live `infu curate` run \(run [0-9a-f]+, host .*, pid "
                                                rf"{holder.pid}, started"):
            claim_output(out, "curate")
    finally:
        holder.kill()
        holder.wait(30)
    with claim_output(out, "curate") as claim:
        assert claim.out == out
