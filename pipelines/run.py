"""`infu run PIPELINE.yaml`: the whole engine as one resumable command.

A pipeline file names the sources, the output root, the FLUX base and, per stage, a
config file and inline overrides (``set``). Stages run in this order, each optional:

    curate -> caption -> train_stage1 -> synth -> train_stage2 -> eval
    ROOT/curated  ROOT/captioned  ROOT/train-stage1  ROOT/spms  ROOT/train-stage2  ROOT/eval

(synth comes after stage-1 training so it can generate with the model just trained,
``model: stage1``, as the paper does; it may name other weights instead). Each stage
reads the output of the stage before it that produces its kind of input, or ``input``.
A finished stage leaves ``ROOT/<output>/pipeline_stage.json`` with the fingerprint of
its config and inputs; a rerun skips it when the fingerprint matches and otherwise runs
it, which resumes inside the stage as the stage's own command does. Everything is
checked (stage names, keys, inputs, weights) before any work starts.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from curation.engine import ConfigError, parse, unknown_keys
from pipelines.config import fingerprint, merge, packaged, read_yaml
from infu_model.hub import ModelError, ModelRef
from infu_model.storage import as_path, is_uri
from pipelines.jobs import JOBS, load_config

TOP_KEYS = ("root", "sources", "base", "ray", "progress", "stages")
DONE = "pipeline_stage.json"


@dataclass(frozen=True)
class PipelineStage:
    name: str                   # its key under ``stages:``
    job: str                    # the job it runs (pipelines/jobs.py)
    folder: str                 # its output, ROOT/<folder>
    defaults: str               # configs/<defaults>.yaml under its ``config`` and ``set``
    keys: tuple[str, ...] = ()  # what its entry may hold besides ``config`` and ``set``


STAGES = (  # in the order they run
    PipelineStage("curate", "curate", "curated", "curate"),
    PipelineStage("caption", "caption", "captioned", "caption", ("input",)),
    PipelineStage("train_stage1", "train", "train-stage1", "stage1", ("input",)),
    PipelineStage("synth", "synth", "spms", "synth", ("input", "model")),
    PipelineStage("train_stage2", "train", "train-stage2", "stage2", ("input", "init")),
    PipelineStage("eval", "eval", "eval", "eval", ("ids", "model", "label")),
)
ORDER = tuple(s.name for s in STAGES)


class PipelineError(ConfigError):
    """The pipeline file cannot run as written (raised before any work starts)."""


@dataclass
class Step:
    stage: PipelineStage
    out: Path                   # (an ObjectPath when the root is in object storage)
    cfg: object                 # the job's typed config
    input: object = None        # what the job takes: sources, an upstream folder, the identities
    found: object = None        # what its check found, when it ran with the pipeline file's (curate)

    @property
    def name(self) -> str:
        return self.stage.name


def plan(spec: dict, source: str = "pipeline") -> list[Step]:
    """Resolve the pipeline file into steps with full configs, or raise PipelineError."""
    unknown_keys(spec, TOP_KEYS, source, PipelineError)
    stages = spec.get("stages") or {}
    if not isinstance(stages, dict):
        raise PipelineError(f"{source}: stages: expected a mapping of stage names to their settings")
    unknown_keys(stages, ORDER, f"{source}: stages", PipelineError)
    if not isinstance(spec.get("sources") or [], list):
        raise PipelineError(f"{source}: sources: expected a list of KIND=PATH")
    if not stages:
        raise PipelineError(f"{source}: no stages; give at least one of {', '.join(ORDER)}")
    if not spec.get("root"):
        raise PipelineError(f"{source}: root (the output folder) is not set")
    root = as_path(spec["root"])
    ray_options(spec, source)
    # the Ray session is the pipeline's (one for all stages); progress bars are for the Ray Data jobs
    common = {"progress": spec["progress"]} if "progress" in spec else {}
    steps: dict[str, Step] = {}
    for stage in STAGES:
        if stage.name not in stages:
            continue
        st = stages[stage.name] or {}
        where = f"{source}: stages.{stage.name}"
        if not isinstance(st, dict):
            raise PipelineError(f"{where}: expected a mapping (config, set, ...), got {st!r}")
        unknown_keys(st, ("config", "set", *stage.keys), where, PipelineError)
        if not isinstance(st.get("set") or {}, dict):
            raise PipelineError(f"{where}.set: expected a mapping of config keys to values")
        try:
            cfg = load_config(stage.defaults, st.get("config"),
                              merge({} if stage.job == "train" else common, st.get("set") or {}), f"{where}.set")
        except ConfigError as e:
            raise PipelineError(str(e)) from None
        steps[stage.name] = Step(stage, root / stage.folder, cfg)
        wire(steps, stage.name, st, spec, where)
    return list(steps.values())


def ray_options(spec: dict, source: str):
    """The pipeline's one Ray session (its ``ray`` block over the jobs' default one)."""
    from pipelines.job import RayOptions

    try:
        return parse(RayOptions, merge(packaged("curate")["ray"], spec.get("ray") or {}), f"{source}: ray")
    except ConfigError as e:
        raise PipelineError(str(e)) from None


def _upstream(steps: dict, st: dict, where: str, *names: str) -> Path:
    if st.get("input"):
        p = as_path(st["input"])
        if not p.exists():
            raise PipelineError(f"{where}: input {p} does not exist")
        return p
    for n in names:
        if n in steps:
            return steps[n].out
    raise PipelineError(f"{where}: no input: add one of the stages {', '.join(names)} or give input: PATH")


def _weights(steps: dict, st: dict, key: str, where: str, *trained: str) -> str:
    value = st.get(key) or "auto"
    if value in ("auto", "stage1", "stage2"):
        names = {"auto": trained, "stage1": ("train_stage1",), "stage2": ("train_stage2",)}[value]
        for n in names:
            if n in steps:
                return str(steps[n].out / "final")
        raise PipelineError(f"{where}: {key}: {value} needs the stage {' or '.join(names)} in this pipeline, "
                            "or give the weights (a folder or hf://...)")
    return _model(value, f"{where}: {key}")


def _model(value, where: str) -> str:
    """A model reference from the pipeline file: its syntax checked, a local one present."""
    try:
        ref = ModelRef.parse(value)
    except ModelError as e:
        raise PipelineError(f"{where}: {e}") from None
    if ref.kind == "local" and not Path(ref.location).expanduser().exists():
        raise PipelineError(f"{where}: {ref.location} does not exist")
    return str(Path(ref.location).expanduser()) if ref.kind == "local" else ref.text


def _base(spec: dict, where: str) -> dict:
    """The pipeline's FLUX base for a stage's ``model`` block ({}: each stage's default, FLUX.1-dev)."""
    return {"base": _model(spec["base"], f"{where}: base")} if spec.get("base") else {}


def produced_here(need, root) -> bool:
    """A model an earlier stage of this pipeline trains (under its root): it exists only once that stage ran."""
    if is_uri(root):
        return need.ref.kind == "storage" and need.ref.location.startswith(f"{root}/")
    return need.ref.kind == "local" and Path(need.ref.location).expanduser().resolve().is_relative_to(
        root.expanduser().resolve())


def wire(steps: dict, name: str, st: dict, spec: dict, where: str) -> None:
    """Point ``steps[name]`` at its input (upstream outputs or given paths) and weights."""
    s = steps[name]
    if name == "curate":
        if not spec.get("sources"):
            raise PipelineError(f"{where}: needs sources: [KIND=PATH, ...] at the top of the pipeline file")
        from pipelines.job import SourceSpec

        try:
            s.input = [SourceSpec.parse(x) for x in spec["sources"]]
            s.found = JOBS[name].check(s.input, s.cfg)  # a wrong path or no image stops the pipeline before any work
        except ValueError as e:
            raise PipelineError(f"{where}: {e}") from None
    elif name == "caption":
        s.input = _upstream(steps, st, where, "curate")
    elif name == "train_stage1":
        s.input = _upstream(steps, st, where, "caption", "curate")
        s.cfg = s.cfg.updated({"model": _base(spec, where)})
    elif name == "synth":
        s.input = _upstream(steps, st, where, "caption", "curate")
        s.cfg = s.cfg.updated({"model": {**_base(spec, where),
                                         "path": _weights(steps, st, "model", where, "train_stage1")}})
    elif name == "train_stage2":
        s.input = _upstream(steps, st, where, "synth")
        init = _weights(steps, st, "init", where, "train_stage1")
        s.cfg = s.cfg.updated({"model": {**_base(spec, where), "init": init}})
    elif name == "eval":
        if not st.get("ids") or not as_path(st["ids"]).is_dir():
            raise PipelineError(f"{where}: ids: the folder of identity photos is missing ({st.get('ids')})")
        s.input = as_path(st["ids"])
        model = _weights(steps, st, "model", where, "train_stage2", "train_stage1")
        s.cfg = s.cfg.updated({"model": {**_base(spec, where), "path": model},
                               **({"label": st["label"]} if st.get("label") else {})})


def done(step: Step) -> bool:
    f = step.out / DONE
    return f.is_file() and json.loads(f.read_text()).get("fingerprint") == _fp(step)


def _fp(step: Step) -> str:
    given = [x.__dict__ for x in step.input] if isinstance(step.input, list) else str(step.input)
    return fingerprint(step.cfg, given)


def execute(step: Step, ray_address: str | None, log) -> dict:
    """Run one stage through the job runner (pipelines/jobs.py), print the job's own summary; returns
    rows in / out. Its check runs now, once: its input is an earlier stage's output (curate's sources
    were checked with the pipeline file, and what that found is reused)."""
    from pipelines.job import check_job, claim_output, run_checked

    job = JOBS[step.stage.job]
    checked = check_job(job.name, job.check, step.input, step.out, step.cfg, log, found=step.found)
    with claim_output(step.out, job.name, checked=True) as claim:
        stats = run_checked(job, step.input, step.out, step.cfg, checked, claim, ray_address=ray_address,
                            log=log)
    log(job.summary(stats, step.out))
    rows_in, rows_out = job.counts(stats)
    return {"in": rows_in, "out": rows_out}


def read_pipeline(path: str | Path, quiet: bool = False, log=None) -> tuple[dict, list[Step]]:
    """The pipeline file, checked whole: its spec and the stages to run, with every model they name
    made ready (but those its own stages train) (errors before any work)."""
    from pipelines.job import check_output
    from pipelines.models import fetch_models

    spec = read_yaml(Path(path), "pipeline file")
    if quiet:
        spec["progress"] = False
    steps = plan(spec, str(path))
    root = check_output(spec["root"], "run")  # a root that is not the pipeline's is refused before any download
    fetch_models([n for s in steps for n in s.cfg.needs() if not produced_here(n, root)], log)
    return spec, steps


def run_pipeline(path: str | Path, *, ray_address: str | None = None, quiet: bool = False, log=print) -> list[dict]:
    """Check the whole pipeline, then run its stages in order (skipping finished ones) in its root."""
    from pipelines.job import claim_output

    spec, steps = read_pipeline(path, quiet)
    with claim_output(spec["root"], "run", checked=True):  # read_pipeline checked it
        return run_steps(spec, steps, ray_address=ray_address, log=log)


def run_steps(spec: dict, steps: list[Step], *, ray_address: str | None = None, log=print) -> list[dict]:
    """The stages of a pipeline whose root its caller claimed, in order (skipping finished ones)."""
    from pipelines.job import write_json
    from pipelines.ray_runtime import init_ray

    init_ray(ray_address, ray_options(spec, "pipeline"), bool(spec.get("progress", True)))
    report = []
    for step in steps:
        t = time.time()
        if done(step):
            rec = json.loads((step.out / DONE).read_text())
            report.append({**rec["report"], "stage": step.name, "status": "skipped (done)", "seconds": 0.0})
            log(f"run: {step.name} already done in {step.out}")
            continue
        log(f"run: {step.name} -> {step.out}")
        try:
            counts = execute(step, ray_address, log)
        except KeyboardInterrupt as e:
            e.stage = step.name  # the command's one line names it
            raise
        rec = {"stage": step.name, "status": "ran", **counts, "seconds": round(time.time() - t, 1),
               "output": str(step.out)}
        write_json(step.out / DONE, {"fingerprint": _fp(step), "report": rec})
        report.append(rec)
    return report


def format_run_summary(report: list[dict]) -> str:
    from pipelines.summary import text_table

    rows = [[r["stage"], r["status"], r.get("in", ""), r.get("out", ""), r["seconds"], r.get("output", "")]
            for r in report]
    return "\n".join(["", "pipeline summary"] + text_table(["stage", "status", "in", "out", "seconds", "output"], rows))

