"""Library and Ray noise goes to the job's log file; our lines and errors stay on the terminal."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    from pipelines.logs import job_logs

    with job_logs(sys.argv[1], "demo", libraries=("transformers",)):
        print("our own line", file=sys.stderr)
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


def test_training_progress_is_said_from_the_metrics_workers_report(ray_local):
    """Ray Train's controller hands each report (one dict per worker) to the callback; the driver says
    worker 0's log records in order, and not the reports that carry only a checkpoint."""
    import threading

    from ray.util.queue import Queue

    from pipelines.train.launch import reported_to, show_progress

    queue = Queue(actor_options={"num_cpus": 0})
    callback = reported_to(queue)
    rec = {"loss": 0.5, "lr": 1e-5, "samples_per_s": 3.0, "gpu_mem_gib": 61.2}
    callback.after_report(None, [{**rec, "step": 2}, {}], None)
    callback.after_report(None, [{}, {}], "a checkpoint")
    callback.after_report(None, [{**rec, "step": 3, "gpu_mem_gib": 0.0}, {}], "a checkpoint")
    said, done = [], threading.Event()
    done.set()  # the run has ended: what is queued is said, then it returns
    show_progress(queue, 3, said.append, done)
    queue.shutdown()
    assert said == ["train: step 2/3  loss 0.5000  lr 1.00e-05  3.00 samples/s  61.2 GiB",
                    "train: step 3/3  loss 0.5000  lr 1.00e-05  3.00 samples/s"]
