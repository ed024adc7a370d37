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
    clear(tmp_path, "curate", keep=tmp_path / "_work" / "logs")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "_work", "_work/logs", "_work/logs/curate.log", "notes.txt"], "a file the job did not write stays"


def test_training_progress_is_reported_from_rank_0s_log_as_it_grows(tmp_path):
    """The driver shows each new train_log.jsonl record (the workers' own output stays in their logs);
    records from before a resume are not repeated, a half-written line waits for its end."""
    import json
    import threading

    from pipelines.train.launch import follow

    path = tmp_path / "train_log.jsonl"
    rec = {"loss": 0.5, "lr": 1e-5, "samples_per_s": 3.0, "gpu_mem_gib": 61.2}
    path.write_text(json.dumps({**rec, "step": 1}) + "\n")
    said, stop = [], threading.Event()
    t = threading.Thread(target=follow, args=(path, 3, said.append, stop, path.read_text().splitlines(), 0.05))
    t.start()
    with open(path, "a") as f:
        f.write(json.dumps({**rec, "step": 2}) + "\n" + json.dumps({**rec, "step": 3})[:20])
        f.flush()
        threading.Event().wait(0.3)
        f.write(json.dumps({**rec, "step": 3})[20:] + "\n")
    stop.set()
    t.join()
    assert said == ["train: step 2/3  loss 0.5000  lr 1.00e-05  3.00 samples/s  61.2 GiB",
                    "train: step 3/3  loss 0.5000  lr 1.00e-05  3.00 samples/s  61.2 GiB"]
