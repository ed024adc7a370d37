"""Library and Ray noise goes to the job's log file; our lines and errors stay on the terminal."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.jobs import load_config

SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    from pipelines.logs import job_logs

    with job_logs(sys.argv[1], "demo"):
        print("our own line", file=sys.stderr)
        assert "transformers" not in sys.modules  # configured as it is imported, not imported to be configured
        os.write(2, b"[core_worker.cc] C++ noise\\n")            # what Ray's core writes to the descriptor
        warnings.warn("a FutureWarning from some library", FutureWarning)
        from transformers.utils import logging as hf
        hf.get_logger("transformers.models.x").warning("torchvision fallback notice")
        logging.getLogger("ray.data").warning("a Ray Data warning")
    print("after the job", file=sys.stderr)
    raise SystemExit("an error the user must see")
""")


def test_noise_goes_to_the_log_file_and_our_lines_stay_on_screen(tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    screen = r.stderr
    log = (tmp_path / "_work" / "logs" / "demo.log").read_text()
    for noise in ("C++ noise", "FutureWarning from some library", "torchvision fallback notice", "a Ray Data warning"):
        assert noise in log and noise not in screen, noise
    assert "our own line" in screen and "our own line" not in log
    assert f"logs: {tmp_path / '_work' / 'logs' / 'demo.log'}" in screen
    assert "after the job" in screen and "an error the user must see" in screen and r.returncode == 1


def test_overwrite_clears_the_output_but_not_the_running_jobs_log(tmp_path):
    from pipelines.job import clear

    for f in ("kept/a.parquet", "_work/manifest/m.parquet", "_work/logs/curate.log", "stats.json", "notes.txt"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    clear(tmp_path, "curate", keep=(tmp_path / "_work" / "logs",))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "_work", "_work/logs", "_work/logs/curate.log", "notes.txt"], "a file the job did not write stays"


def test_training_progress_and_recoveries_are_said_from_what_ray_train_reports(ray_local, tmp_path):
    """Ray Train's controller hands each report (one dict per worker) to the callback; the driver says
    worker 0's log records in order, and not the reports that carry only a checkpoint. A worker group
    that lost a worker, which Ray Train restarts, is one line naming the worker and the checkpoint Ray
    Train recorded last (where it restarts), not a newer folder."""
    import threading

    from ray.exceptions import ActorDiedError
    from ray.train.v2._internal.execution.controller.state import RestartingState, RunningState
    from ray.train.v2.api.exceptions import WorkerGroupError
    from ray.util.queue import Queue

    from pipelines.train.launch import show_progress
    from pipelines.train.watch import watched_by

    cfg = load_config("stage1", overrides={"train": {"max_steps": 3}, "output": str(tmp_path)})
    (tmp_path / "checkpoints" / "step-00000004").mkdir(parents=True)  # written, but its report was cut short
    (tmp_path / "checkpoints" / "checkpoint_manager_snapshot.json").write_text(  # what Ray Train recorded
        '{"latest_checkpoint_result": {"checkpoint_dir_name": "step-00000002"}}')
    queue = Queue(actor_options={"num_cpus": 0})
    reports, recoveries = watched_by(queue)
    rec = {"loss": 0.5, "lr": 1e-5, "samples_per_s": 3.0, "gpu_mem_gib": 61.2}
    reports.after_report(None, [{**rec, "step": 2}, {}], None)
    reports.after_report(None, [{}, {}], "a checkpoint")
    lost = WorkerGroupError("worker 1 died", {0: RuntimeError("gloo: Connection closed by peer"), 1: ActorDiedError()})
    recoveries.after_controller_state_update(RunningState(), RestartingState(lost))
    reports.after_report(None, [{**rec, "step": 3, "gpu_mem_gib": 0.0}, {}], "a checkpoint")
    said, done = [], threading.Event()
    done.set()  # the run has ended: what is queued is said, then it returns
    show_progress(queue, cfg, said.append, done)
    queue.shutdown()
    assert said == ["train: step 2/3  loss 0.5000  lr 1.00e-05  3.00 samples/s  61.2 GiB",
                    "train: lost worker 1; Ray Train restarts every worker from step-00000002 once 1 can be placed "
                    "(ray.max_failures: 3)",
                    "train: step 3/3  loss 0.5000  lr 1.00e-05  3.00 samples/s"]


def test_a_survivors_lost_peer_is_a_lost_worker_not_a_crash():
    """When a node dies, the surviving worker's gloo error can be the failure Ray Train sees first: the run
    that uses up its retries that way still ends in the one line that says to rerun (not a traceback), and
    names the connection lost; a failure of the training itself is not taken for one."""
    from ray.exceptions import ActorDiedError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from pipelines.train.watch import lost_for_good, lost_workers

    reset = RuntimeError("[gloo/transport/tcp/pair.cc:534] Read error [127.0.0.2]:41235: Connection reset by peer")
    cut = WorkerGroupError("training failed", {0: reset})
    assert lost_for_good(cut)
    assert lost_workers(cut) == ("the connection of worker 0 to another worker (RuntimeError: [gloo/transport/tcp/"
                                 "pair.cc:534] Read error [127.0.0.2]:41235: Connection reset by peer)")
    assert lost_workers(WorkerGroupError("w", {0: reset, 1: ActorDiedError()})) == "worker 1", "the dead one is named"
    assert not lost_for_good(WorkerGroupError("training failed", {0: ValueError("loss is nan")}))


def test_progress_lines_say_how_far_where_no_terminal_shows_bars(monkeypatch):
    """Off a terminal: a line every few seconds with the count, the rate and the time left; on a
    terminal (where Ray Data draws its bars) nothing."""
    import io
    import re
    import time

    from pipelines.logs import progress_lines

    said, t0 = [], time.time()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    with progress_lines("curate", 100, lambda: min(100, int((time.time() - t0) * 200)), said.append, every=0.1):
        time.sleep(0.35)
    assert said and all(re.fullmatch(r"curate: \d+ of 100 rows \(\d+\.\d rows/s(, about \d+:\d\d left)?\)", s)
                        for s in said), said

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    said.clear()
    monkeypatch.setattr(sys, "stderr", Terminal())
    with progress_lines("curate", 100, lambda: 1, said.append, every=0.05):
        time.sleep(0.2)
    assert said == []


@pytest.mark.slow
def test_a_piped_curate_prints_our_lines_not_ray_datas_plan(sample_dir, tmp_path):
    """`infu curate ... | cat`: no `Running Dataset` blocks or sampling bars, our progress lines and summary."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stages: []\n")
    r = subprocess.run([str(Path(sys.executable).parent / "infu"), "curate", "--source", f"folder={sample_dir}",
                        "--out", str(tmp_path / "out"), "--config", str(cfg)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "INFU_PROGRESS_S": "0.2", "RAY_AUTH_MODE": "disabled"})
    screen = r.stdout + r.stderr
    assert r.returncode == 0, screen[-3000:]
    assert "Running Dataset" not in screen and "sampling" not in screen and "\r" not in screen, screen[:3000]
    assert "curate: 20 rows to process" in screen and "accounting: every input kept" in screen
    assert len(screen.splitlines()) < 40, screen
