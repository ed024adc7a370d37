"""The jobs, declared once: what each takes and makes, its typed config, the functions that check,
run and summarise it, and its part of the report. The CLI, ``infu run`` and ``infu report`` read this
table (the runner that checks and runs a job is ``pipelines.job``): adding a job is its module plus one
entry here. It imports nothing of ours, so any module may read it.

A job's functions are named ``module:function``, imported when used: importing every job's module to read
the table would cost each command about 9 s on 2 cores (training's imports diffusers and torch).

- ``check(inputs, cfg)``: everything the job can be refused for, before it touches its output; returns
  what it found (sources, captioners, identities...), which its run takes instead of checking again;
- ``run(inputs, out, cfg, *, checked=None, claim=None, ray_address=None, log=print, **options) -> stats``:
  it records its settings in the folder the runner claimed and works (``pipelines.job.job_run``: called
  without ``checked`` and ``claim``, as a library function, it checks and claims itself);
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
    makes: str                 # spss | spms | weights | scores | identities
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
    Job("identities", ("identities",), "pipelines.identities:IdentitiesConfig", "spss", "identities", "stats.json",
        "pipelines.identities:check_identities", "pipelines.identities:run_identities",
        "pipelines.summary:identities_summary", "pipelines.summary:identities_counts",
        "pipelines.report:identities_section"),
)}


def config_class(defaults: str) -> type:
    """The typed config of the job whose packaged YAML is ``configs/<defaults>.yaml``."""
    for job in JOBS.values():
        if defaults in job.defaults:
            return job("config")
    raise KeyError(f"no job config named {defaults!r}; known: "
                   + ", ".join(d for job in JOBS.values() for d in job.defaults))
