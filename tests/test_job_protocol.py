"""The job protocol as one table: every job (curate, caption, synth, train, eval, identities, and `infu run`'s root),
on a local folder and in a bucket on two S3 implementations (moto; s3rver, which has no conditional
writes), gets the same guarantees from the same code (pipelines/job.py): its folder claimed once and
refused to a second run while live, a folder that is not its own refused untouched, a changed setting
refused in one line naming it and both values, one a resumed run may change accepted, and --overwrite
clearing what the job wrote and nothing else. The guarantees that need a real run (kill -9, a dead
run's late writes, Ctrl-C, a full disk) keep their own tests: test_interrupts, test_bucket_outputs,
test_boundaries, test_disk_full, test_train_job."""
from __future__ import annotations

import pytest

from pipelines.jobs import load_config
from pipelines.job import (ConfigMismatch, Layout, OutputRefused, SourceSpec, claim_output, prepare_out,
                           start_run)

# job: (its packaged config, a setting that changes its output and how the refusal names it, one that may change)
SETTINGS = {
    "curate": ("curate", {"filters": {"min_side": 400}}, "filters.min_side: 256 then, 400 now", {"ray": {"num_cpus": 1}}),
    "caption": ("caption", {"max_chars": 99}, "max_chars: 400 then, 99 now", {"ray": {"num_cpus": 1}}),
    "synth": ("synth", {"seed": 7}, "seed: 0 then, 7 now", {"ray": {"num_cpus": 1}}),
    "train": ("stage1", {"train": {"lr": 5.0e-2}}, "train.lr: 2e-05 then, 0.05 now", {"train": {"max_steps": 99}}),
    "eval": ("eval", {"seed": 7}, "seed: 42 then, 7 now", {"bootstrap": {"samples": 10}}),
    "identities": ("identities", {"neighbours": 5}, "neighbours: 10 then, 5 now", {"shard_rows": 1000}),
}
ROW_JOBS = ("curate", "caption", "synth")
STORES = ("disk", "moto", "s3rver")


@pytest.fixture(scope="module")
def servers():
    from s3_server import S3rver, S3Server

    started = {"moto": S3Server(), "s3rver": S3rver()}
    for name, server in started.items():
        server.bucket(f"protocol-{name}")
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(params=STORES)
def place(request, tmp_path, monkeypatch):
    """Where a job's output goes on this store: a new folder, or a new prefix in a bucket of this server."""
    if request.param == "disk":
        return lambda name: str(tmp_path / name)
    server = request.getfixturevalue("servers")[request.param]
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    bucket = f"protocol-{request.param}"
    prefix = f"s3://{bucket}/{request.node.callspec.id.replace('[', '-').replace(']', '')}-{id(tmp_path)}"
    return lambda name: f"{prefix}/{name}"


def opened(job: str, out: str, cfg, overwrite: bool = False) -> None:
    """What a run of ``job`` does before it works: claim its folder once, record its settings (a row job
    also takes its lease on the workers' writes), then let the folder go as its end does."""
    specs = [SourceSpec("spss", "input", "/data/in")]
    with claim_output(out, job) as claim:
        if job in ROW_JOBS:
            prepare_out(Layout(out), claim, cfg, specs, overwrite)
        else:
            start_run(claim, cfg, specs, overwrite)


def names(out: str) -> set[str]:
    from infu_model.storage import as_path

    root = as_path(out)
    return {str(p)[len(str(root)) + 1:] for p in root.rglob("*")} if root.is_dir() else set()


@pytest.mark.parametrize("job", list(SETTINGS))
def test_a_changed_setting_is_refused_in_one_line_a_resumable_one_is_not_and_overwrite_keeps_a_users_files(job, place):
    from infu_model.storage import as_path

    name, changed, line, resumable = SETTINGS[job]
    cfg, out = load_config(name), place("out")
    opened(job, out, cfg)
    (as_path(out) / "my-notes.txt").write_text("mine")
    with pytest.raises(ConfigMismatch) as refused:
        opened(job, out, cfg.updated(changed))
    assert line in str(refused.value) and "\n" not in str(refused.value) and "--overwrite" in str(refused.value)
    opened(job, out, cfg.updated(resumable))   # resumes
    opened(job, out, cfg)                      # and again, as it was
    opened(job, out, cfg.updated(changed), overwrite=True)
    assert "my-notes.txt" in names(out) and (as_path(out) / "my-notes.txt").read_text() == "mine"
    opened(job, out, cfg.updated(changed))     # the new settings are the folder's now
    with pytest.raises(ConfigMismatch, match="then"):
        opened(job, out, cfg)


@pytest.mark.parametrize("job", [*SETTINGS, "run"])
def test_a_folder_is_claimed_once_and_refused_to_a_second_run_while_live(job, place):
    out = place("out")
    with claim_output(out, job):
        with pytest.raises(OutputRefused, match=rf"is in use by a live `infu {job}` run \(run [0-9a-f]+, host"):
            claim_output(out, job)
    claim_output(out, job).release()  # the run ended: free


@pytest.mark.parametrize("job", [*SETTINGS, "run"])
def test_a_folder_that_is_not_the_jobs_is_refused_and_left_untouched(job, place):
    from infu_model.storage import as_path

    users = place("photos")
    as_path(users).mkdir(parents=True, exist_ok=True)
    (as_path(users) / "me.jpg").write_bytes(b"jpeg")
    other = place("other")
    claim_output(other, "eval" if job != "eval" else "curate").release()
    before = {folder: names(folder) for folder in (users, other)}
    with pytest.raises(OutputRefused, match=rf"holds no earlier `infu {job}` output"):
        claim_output(users, job)
    with pytest.raises(OutputRefused, match=rf"holds the output of `infu \w+`, not of `infu {job}`"):
        claim_output(other, job)
    assert {folder: names(folder) for folder in (users, other)} == before
