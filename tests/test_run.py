"""`infu run`: the pipeline file is checked whole before work starts, wired stage to stage, and a
rerun skips what is done."""
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.run import PipelineError, plan

ROOT = Path(__file__).resolve().parent.parent


def example(tmp_path: Path) -> dict:
    """configs/pipeline.yaml with its paths pointed at folders that exist here (its sources at replicas
    of those datasets' layouts: the file is checked down to the sources holding images)."""
    from replicas import BUILDERS

    spec = yaml.safe_load((ROOT / "configs" / "pipeline.yaml").read_text())
    for d in ("base", "ids"):
        (tmp_path / d).mkdir()
    kinds = [src.split("=")[0] for src in spec["sources"]]
    for kind in kinds:
        BUILDERS[kind](tmp_path / kind)
    spec.update(root=str(tmp_path / "out"), base=str(tmp_path / "base"),
                sources=[f"{kind}={tmp_path / kind}" for kind in kinds])
    spec["stages"]["eval"]["ids"] = str(tmp_path / "ids")
    return spec


def test_the_documented_pipeline_is_valid_and_wires_each_stage_to_the_one_before(tmp_path):
    steps = {s.name: s for s in plan(example(tmp_path))}
    out = tmp_path / "out"
    assert list(steps) == ["curate", "caption", "train_stage1", "synth", "train_stage2", "eval"]
    assert steps["caption"].input == out / "curated"
    assert steps["train_stage1"].input == out / "captioned"
    assert steps["synth"].input == out / "captioned"
    assert str(steps["synth"].cfg.model.path) == str(out / "train-stage1" / "final"), "synth with the stage-1 model"
    assert str(steps["train_stage2"].cfg.model.init) == str(out / "train-stage1" / "final")
    assert steps["train_stage2"].input == out / "spms"
    assert str(steps["eval"].cfg.model.path) == str(out / "train-stage2" / "final")
    assert str(steps["synth"].cfg.model.base) == str(tmp_path / "base"), "the pipeline's base in every stage"
    assert steps["train_stage1"].cfg.ray.num_workers == 8 and steps["train_stage1"].cfg.train.lr == 2e-5


@pytest.mark.parametrize("edit,message", [
    (lambda s: s["stages"].update(captoin={}), r"stages: unknown key 'captoin' \(did you mean 'caption'\?\)"),
    (lambda s: s["stages"]["curate"].update(set={"filters": {"min_sid": 300}}),
     r"stages.curate.set.filters: unknown key 'min_sid' \(did you mean 'min_side'\?\)"),
    (lambda s: s.update(rot="x"), r"unknown key 'rot' \(did you mean 'root'\?\)"),
    (lambda s: s["stages"].pop("curate"), r"stages.caption: no input: add one of the stages curate or give input"),
    (lambda s: s["stages"].pop("train_stage1"), r"stages.synth: model: stage1 needs the stage train_stage1"),
    (lambda s: s.update(base="/nowhere/flux"), r"stages.train_stage1: base: /nowhere/flux does not exist"),
    (lambda s: s.update(base="hf://flux"), r"stages.train_stage1: base: hf://flux: a Hub model is written"),
    (lambda s: s["stages"]["eval"].update(model="hf://a/b@"), r"stages.eval: model: hf://a/b@: empty revision"),
    (lambda s: s["stages"]["eval"].update(ids="/nowhere/ids"), r"stages.eval: ids: .*/nowhere/ids"),
    (lambda s: s.update(sources=["no_equals_sign"]), r"stages.curate: .*KIND"),
    (lambda s: s.update(sources=["ffhq=/nowhere/ffhq"]), r"stages.curate: ffhq: path does not exist: /nowhere/ffhq"),
])
def test_mistakes_in_the_pipeline_file_stop_it_before_any_work(tmp_path, edit, message):
    spec = example(tmp_path)
    edit(spec)
    with pytest.raises(PipelineError, match=message):
        plan(spec)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_run(sample_dir, ray_local, tmp_path_factory):
    """configs/pipeline-tiny.yaml's curate -> caption on the sample photos (the whole file, training,
    synth and eval included, is what scripts/demo.sh runs: it takes minutes)."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    spec = yaml.safe_load((ROOT / "configs" / "pipeline-tiny.yaml").read_text())
    stages = {"curate": {"set": {"stages": [{"name": "faces", "backend": "dlib"}]}}, "caption": spec["stages"]["caption"]}
    spec.update(root=str(tmp / "run"), stages=stages, sources=[f"folder:sample={sample_dir}"])
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    first = CliRunner().invoke(main, ["run", str(path), "--quiet"])
    return tmp, spec, path, first


def test_a_pipeline_runs_its_stages_in_one_command_and_a_rerun_skips_them(tiny_run):
    tmp_path, spec, path, first = tiny_run
    assert first.exit_code == 0, first.output
    table = first.output.split("pipeline summary")[1].splitlines()
    assert [ln.split()[:2] for ln in table[3:]] == [["curate", "ran"], ["caption", "ran"]]
    assert "curate: runs on cpu (faces: dlib faces (dlib) on cpu)" in first.output, "each job says where it runs"
    curated = json.loads((tmp_path / "run" / "curated" / "stats.json").read_text())
    captioned = json.loads((tmp_path / "run" / "captioned" / "stats.json").read_text())
    assert curated["adds_up"] and captioned["inputs"] == curated["kept"] == 6 and captioned["adds_up"]
    before = {stage: files_of(tmp_path / "run" / stage) for stage in ("curated", "captioned")}
    again = CliRunner().invoke(main, ["run", str(path), "--quiet"])
    assert again.exit_code == 0, again.output
    table = again.output.split("pipeline summary")[1].splitlines()
    assert [ln.split()[:2] for ln in table[3:]] == [["curate", "skipped"], ["caption", "skipped"]]
    assert {stage: files_of(tmp_path / "run" / stage) for stage in before} == before, "a skipped stage writes nothing"
    spec["stages"]["caption"] = {"set": {"max_chars": 300, "captioners": []}}   # a changed stage runs again, the rest stays done
    path.write_text(yaml.safe_dump(spec))
    third = CliRunner().invoke(main, ["run", str(path), "--quiet"])
    assert third.exit_code == 1 and "--overwrite" in third.output, "caption's own guard: same output, new config"
    assert "run: curate already done" in third.output and "run: caption ->" in third.output, "only caption ran"
    assert {stage: files_of(tmp_path / "run" / stage) for stage in before} == before, \
        "curate's output stays as it was, and caption's guard refused before writing"


def files_of(folder: Path) -> dict[str, str]:
    """Every file of a stage's output and the sha1 of its bytes (its logs and its live lock, which say who
    ran there and when, aside)."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and "logs" not in p.relative_to(folder).parts and p.name != "live"}


def test_the_report_opens_in_a_browser_without_errors_and_shows_the_counts(tiny_run, tmp_path):
    """What a person sees: ROOT/report.html in headless Chromium, no console errors, exceptions or
    failed loads; the funnel it shows adds up to stats.json; one sampled thumbnail per reject."""
    from browser import Page, require_chromium

    require_chromium()
    root = tiny_run[0] / "run"
    stats = json.loads((root / "curated" / "stats.json").read_text())
    with Page((root / "report.html").resolve().as_uri()) as page:
        shown = dict(page.evaluate("[...document.querySelectorAll('[data-funnel]')].map(e => [e.dataset.funnel, "
                                   "+e.textContent])"))
        thumbs = page.evaluate("document.querySelectorAll('#curate figure img').length")
        sections = page.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
        page.screenshot(tmp_path / "report.png")
        assert page.errors == []
    steps = list(shown.values())
    assert shown["inputs"] == stats["inputs"] and shown["kept"] == stats["kept"]
    assert steps == sorted(steps, reverse=True) and steps[-2] == steps[-1], "rows only leave; the last stage ends at kept"
    assert steps[0] - steps[-1] == stats["rejected"] + stats["quarantined"]
    assert shown["faces"] == shown["quality"] - sum(stats["by_reason"].get(r, 0) for r in ("no_face", "multiple_faces",
                                                                                             "small_face"))
    undecodable = stats["by_reason"]["decode_error"]
    assert thumbs >= stats["rejected"] + stats["quarantined"] - undecodable   # every reject is shown (< 12 per reason)
    assert sections == ["curate", "caption"]
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_the_browser_check_catches_console_errors_exceptions_and_failed_loads(tmp_path):
    """The check above can fail: a page with each kind of error."""
    from browser import Page, require_chromium

    require_chromium()
    bad = tmp_path / "bad.html"
    bad.write_text('<p>x</p><script>console.error("shown"); missingFunction();</script><img src="gone.png">')
    with Page(bad.as_uri()) as page:
        errors = page.errors
    assert sorted(e.split(":")[0] for e in errors) == ["console.error", "exception", "log"], errors
