"""The jobs, declared once: what each takes and makes, its typed config, the functions that check,
run and summarise it, and its part of the report. The CLI, ``infu run`` and ``infu report`` read this
table: adding a job is its module plus one entry here.

A job's functions are named ``module:function`` (imported when used: the modules load model code):

- ``check(inputs, cfg)``: everything the job can be refused for, before it touches its output; returns
  what it found (sources, captioners, identities...), which its run takes instead of checking again;
- ``run(inputs, out, cfg, *, checked=None, ray_address=None, log=print, **options) -> stats``: it claims
  its folder and works (``checked``: a ``Checked`` from the runner, else it checks first itself);
- ``summary(stats, out) -> str``: what the terminal shows when it ends;
- ``counts(stats) -> (rows in, rows out)``: its line in ``infu run``'s table;
- ``section(folder, stats) -> str``: its section of ``report.html``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str                  # its command (``infu NAME``) and the kind its output's run.json names
    defaults: tuple[str, ...]  # its packaged YAML files (configs/NAME.yaml)
    config: str                # its typed config (module:Class)
    takes: str                 # its input: sources (KIND=PATH) | spss | spss or spms | ids (identity photos)
    makes: str                 # spss | spms | weights | scores
    result: str                # the file of its output folder that says it has something to show
    check: str
    run: str
    summary: str
    counts: str
    section: str

    def __call__(self, part: str):
        """The function (or class) this job names for ``part``."""
        module, name = getattr(self, part).split(":")
        return getattr(importlib.import_module(module), name)


JOBS = {job.name: job for job in (
    Job("curate", ("curate",), "pipelines.curate:CurateConfig", "sources", "spss", "stats.json",
        "pipelines.curate:check_curate", "pipelines.curate:run_curate", "pipelines.summary:curate_summary",
        "pipelines.summary:curate_counts", "pipelines.report:curate_section"),
    Job("caption", ("caption",), "pipelines.caption:CaptionConfig", "spss", "spss", "stats.json",
        "pipelines.caption:check_caption", "pipelines.caption:run_caption", "pipelines.summary:caption_summary",
        "pipelines.summary:caption_counts", "pipelines.report:caption_section"),
    Job("train", ("stage1", "stage2"), "pipelines.train.config:TrainConfig", "spss or spms", "weights",
        "train_log.jsonl", "pipelines.train:check_training", "pipelines.train:run_train",
        "pipelines.summary:train_summary", "pipelines.summary:train_counts", "pipelines.report:train_section"),
    Job("synth", ("synth",), "pipelines.synth:SynthConfig", "spss", "spms", "stats.json",
        "pipelines.synth:check_synth", "pipelines.synth:run_synth", "pipelines.summary:synth_summary",
        "pipelines.summary:synth_counts", "pipelines.report:synth_section"),
    Job("eval", ("eval",), "pipelines.eval:EvalConfig", "ids", "scores", "summary.json",
        "pipelines.eval:check_eval", "pipelines.eval:run_eval", "pipelines.summary:eval_summary",
        "pipelines.summary:eval_counts", "pipelines.report:eval_section"),
)}


@dataclass(frozen=True)
class Checked:
    """What a job's check found, handed to its run: a job run by the runner is checked once."""
    found: object = None


def check_job(name: str, inputs, out, cfg, log=print, found=None) -> Checked:
    """Everything the job ``name`` can be refused for, once: its own check (unless ``found``, what it
    found when it ran earlier), its output folder, its models (fetched into the cache before the
    folder is claimed or a worker starts)."""
    from pipelines.job import check_output
    from pipelines.models import fetch_models

    if found is None:
        found = JOBS[name]("check")(inputs, cfg)
    check_output(out, name)
    fetch_models(cfg.needs(), log)
    return Checked(found)


def run_checked(name: str, inputs, out, cfg, checked: Checked, *, log=print, **options) -> dict:
    """The job ``name`` after ``check_job``: where its models run, then its work (which claims ``out``)."""
    from pipelines.doctor import job_lines

    for line in job_lines(name, cfg):  # where its models run, and each that will not run where asked
        log(line)
    return JOBS[name]("run")(inputs, out, cfg, checked=checked, log=log, **options)


def config_class(defaults: str) -> type:
    """The typed config of the job whose packaged YAML is ``configs/<defaults>.yaml``."""
    for job in JOBS.values():
        if defaults in job.defaults:
            return job("config")
    raise KeyError(f"no job config named {defaults!r}; known: "
                   + ", ".join(d for job in JOBS.values() for d in job.defaults))
