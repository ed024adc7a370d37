"""The `infu` command line: help, usage errors, the summary a user reads."""
import json

import pytest
from click.testing import CliRunner

from pipelines.cli import main


def test_help_explains_every_curate_option():
    out = CliRunner().invoke(main, ["curate", "--help"]).output
    for opt in ("--source", "--out", "--config", "--ray-address", "--overwrite", "--quiet"):
        assert opt in out
    assert "vggface2" in out and "cosmicmanhq" in out


def test_bad_source_syntax_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["curate", "--source", "no_equals_sign", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "KIND=PATH" in r.output


def test_curate_prints_a_summary_and_refuses_a_changed_config(sample_dir, ray_local, tmp_path):
    out, cfg = tmp_path / "o", tmp_path / "c.yaml"
    cfg.write_text("stages: []   # the cheap filters: the model stages have their own tests\n")
    args = ["curate", "--source", f"folder={sample_dir}", "--out", str(out), "--quiet", "--config", str(cfg)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "curate summary" in r.output and "duplicate" in r.output and "decode_error" in r.output
    assert "dedup      ran" in r.output
    assert "every input kept, rejected or quarantined: yes" in r.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 10 and stats["adds_up"]
    cfg.write_text("stages: []\nfilters: {min_side: 500}\n")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "--overwrite" in r.output


def test_sample_data_writes_a_new_folder_or_its_own_and_nothing_else(tmp_path):
    from curation.samples import SAMPLE_FOLDERS

    r = CliRunner().invoke(main, ["sample-data", str(tmp_path / "s")])
    assert r.exit_code == 0 and (tmp_path / "s" / "group" / "t1.jpg").exists()
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(SAMPLE_FOLDERS)
    assert CliRunner().invoke(main, ["sample-data", str(tmp_path / "s")]).exit_code == 0, "its own output again"
    mine = tmp_path / "photos"
    (mine / "portraits").mkdir(parents=True)
    (mine / "me.jpg").write_bytes(b"a user's photo")
    for command in ("sample-data", "make-tiny"):
        r = CliRunner().invoke(main, [command, str(mine)])
        assert r.exit_code == 1 and f"holds 'me.jpg', which `infu {command}` did not write" in r.output, r.output
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == ["me.jpg", "portraits"], "nothing written"


def test_make_tiny_as_the_demo_runs_it_prints_its_two_lines_and_no_library_notice(tmp_path):
    """The demo's first step, in a fresh process: no diffusers deprecation notice about its own import,
    no bars for writing a tiny model (they once opened the demo's output)."""
    import subprocess
    import sys
    from pathlib import Path

    infu = Path(sys.executable).parent / "infu"
    done = subprocess.run([str(infu), "make-tiny", str(tmp_path / "tiny")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == f"tiny base: {tmp_path / 'tiny' / 'base'}\ntiny InfU: {tmp_path / 'tiny' / 'infu_flux_v1.0'}\n"


def test_a_typo_in_a_config_file_stops_the_job_before_any_work(tmp_path):
    """`filters: {min_sid: 300}` used to run to the end with the default and no word said."""
    cfg = tmp_path / "c.yaml"
    for text, message in (("filters: {min_sid: 300}\n", "c.yaml: filters: unknown key 'min_sid' (did you mean 'min_side'?)"),
                          ("stages: [{name: faces, min_face_pxl: 60}]\n",
                           "c.yaml: stages[0] (faces): unknown key 'min_face_pxl' (did you mean 'min_face_px'?)")):
        cfg.write_text(text)
        r = CliRunner().invoke(main, ["curate", "--source", f"folder={tmp_path}", "--out", str(tmp_path / "o"),
                                      "--config", str(cfg)])
        assert r.exit_code == 1 and message in r.output, r.output
        assert not (tmp_path / "o").exists()


def test_a_value_of_the_wrong_kind_is_an_error_naming_the_key(tmp_path):
    from curation.engine import ConfigError
    from pipelines.jobs import load_config

    cfg = tmp_path / "t.yaml"
    cfg.write_text("stage: 1\ntrain: {lr: 1e-4}\n")   # YAML 1.1 reads 1e-4 (no dot) as text
    with pytest.raises(ConfigError, match=r"t.yaml: train.lr: expected a number, got '1e-4' "
                                          r"\(YAML reads 1e-4 as text: write 1.0e-4\)"):
        load_config("stage1", cfg)
    cfg.write_text("filters: {min_blur: 30}\nprogress: yes\nstages: []\n")   # numbers and true/false as meant
    assert load_config("curate", cfg).filters.min_blur == 30


@pytest.mark.parametrize("command", [
    lambda t, s, a: ["curate", "--source", f"folder={s}", "--out", str(t / "out"), "--ray-address", a],
    lambda t, s, a: ["train", "--config", str(_stage1(t)), "--ray-address", a],
    lambda t, s, a: ["run", str(_pipeline(t, s)), "--ray-address", a],
    lambda t, s, a: ["doctor", "--ray-address", a],
], ids=["curate", "train", "run", "doctor"])
def test_a_cluster_that_does_not_answer_is_one_line_at_once(tmp_path, sample_dir, command):
    """A wrong --ray-address (nothing listens there) ends in seconds with one line naming it, before any
    output folder exists, instead of Ray retrying for minutes out of sight."""
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    t0 = time.time()
    r = CliRunner().invoke(main, command(tmp_path, sample_dir, address))
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert r.exit_code == 1 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert f"no Ray cluster answers at {address}" in errors[0] and "ray start --head" in errors[0]
    assert time.time() - t0 < 15
    assert not (tmp_path / "out").exists() and not (tmp_path / "train-out").exists()


def _stage1(tmp_path):
    import yaml

    f = tmp_path / "s1.yaml"
    f.write_text(yaml.safe_dump({"data": {"parquet": str(tmp_path)}, "output": str(tmp_path / "train-out")}))
    return f


def _pipeline(tmp_path, sample_dir):
    import yaml

    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"root": str(tmp_path / "out"), "sources": [f"folder={sample_dir}"],
                                 "stages": {"curate": {"set": {"stages": []}}}}))
    return f
