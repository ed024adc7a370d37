"""The job runner (pipelines/jobs.py): the CLI and `infu run` check each job once (its own check, its
output folder), then claim it once (its live lock taken once) and run it; the job's run takes what the
check found and the claim instead of checking and claiming again. A job function called directly as a
library function still checks first, and claims once."""
from collections import Counter
from dataclasses import replace

import pytest
import yaml
from click.testing import CliRunner

import pipelines.job
from pipelines.cli import main
from pipelines.jobs import JOBS


@pytest.fixture
def counted(monkeypatch):
    """Calls of the runner's check and claim, and of each job's own check as the table names it."""
    calls = Counter()

    def counting(fn, name):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    for name in ("check_job", "check_output", "hold_live"):
        monkeypatch.setattr(pipelines.job, name, counting(getattr(pipelines.job, name), name))
    for job in ("curate", "caption"):
        monkeypatch.setitem(JOBS, job, replace(JOBS[job], check=counting(JOBS[job].check, f"check_{job}")))
    return calls


def test_infu_curate_checks_once(counted, sample_dir, ray_local, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"stages": [], "progress": False}))
    r = CliRunner().invoke(main, ["curate", "--source", f"folder={sample_dir}", "--out", str(tmp_path / "out"),
                                  "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert counted == {"check_job": 1, "check_curate": 1, "check_output": 1, "hold_live": 1}


def test_infu_run_checks_each_stage_once(counted, sample_dir, ray_local, tmp_path):
    spec = {"root": str(tmp_path / "root"), "sources": [f"folder={sample_dir}"], "progress": False,
            "stages": {"curate": {"set": {"stages": []}}, "caption": {"set": {"captioners": []}}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    r = CliRunner().invoke(main, ["run", str(tmp_path / "p.yaml")])
    assert r.exit_code == 0, r.output
    # the root, curate's folder and caption's folder: each checked and claimed once, as is each stage
    assert counted == {"check_job": 2, "check_curate": 1, "check_caption": 1, "check_output": 3, "hold_live": 3}


def test_a_job_called_as_a_library_function_checks_first(counted, sample_dir, ray_local, tmp_path):
    from pipelines.jobs import load_config
    from pipelines.curate import run_curate
    from pipelines.job import SourceSpec

    run_curate([SourceSpec("folder", "s", str(sample_dir))], tmp_path / "out",
               load_config("curate", overrides={"stages": [], "progress": False}), log=lambda m: None)
    assert counted == {"check_job": 1, "check_output": 1, "hold_live": 1}  # (its check_curate, inside check_job)
    run_curate([SourceSpec("folder", "s", str(sample_dir))], tmp_path / "out",  # it let the folder go: a rerun may
               load_config("curate", overrides={"stages": [], "progress": False}), log=lambda m: None)  # take it
