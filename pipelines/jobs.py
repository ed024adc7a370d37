"""The jobs, declared once: what each takes and makes, its typed config, the functions that check,
run and summarise it, and its part of the report. The CLI, ``infu run`` and ``infu report`` read this
table (the runner that checks and runs a job is ``pipelines.job``): adding a job is its module plus one
entry here. Loading a job's config by name (``load_config``) reads it too.

Each job's module is light to import (about 1.5 s for all of them on 2 cores, mostly Ray Data and
pyarrow): what a run needs beyond that (torch, diffusers, the models) it imports when it runs.

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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from curation.engine import ConfigError
from pipelines import caption, curate, eval as evaluate, identities, sections, summary, synth
from pipelines.config import CONFIG_DIR, merge, packaged, read_yaml
from pipelines.train import config as train_config, launch as train


@dataclass(frozen=True)
class Job:
    name: str                  # its command (``infu NAME``) and the kind its output's run.json names
    defaults: tuple[str, ...]  # its packaged YAML files (configs/NAME.yaml)
    config: type               # its typed config
    takes: str                 # its input: sources (KIND=PATH) | spss | spss or spms | ids (identity photos)
    makes: str                 # spss | spms | weights | scores | identities
    result: str                # the file of its output folder that says it has something to show
    check: Callable
    run: Callable
    summary: Callable
    counts: Callable
    section: Callable


JOBS = {job.name: job for job in (
    Job("curate", ("curate",), curate.CurateConfig, "sources", "spss", "stats.json", curate.check_curate,
        curate.run_curate, summary.curate_summary, summary.curate_counts, sections.curate_section),
    Job("caption", ("caption",), caption.CaptionConfig, "spss", "spss", "stats.json", caption.check_caption,
        caption.run_caption, summary.caption_summary, summary.caption_counts, sections.caption_section),
    Job("train", ("stage1", "stage2"), train_config.TrainConfig, "spss or spms", "weights", "train_log.jsonl",
        train.check_training, train.run_train, summary.train_summary, summary.train_counts, sections.train_section),
    Job("synth", ("synth",), synth.SynthConfig, "spss", "spms", "stats.json", synth.check_synth, synth.run_synth,
        summary.synth_summary, summary.synth_counts, sections.synth_section),
    Job("eval", ("eval",), evaluate.EvalConfig, "ids", "scores", "summary.json", evaluate.check_eval,
        evaluate.run_eval, summary.eval_summary, summary.eval_counts, sections.eval_section),
    Job("identities", ("identities",), identities.IdentitiesConfig, "spss", "identities", "stats.json",
        identities.check_identities, identities.run_identities, summary.identities_summary,
        summary.identities_counts, sections.identities_section),
)}


def config_class(defaults: str) -> type:
    """The typed config of the job whose packaged YAML is ``configs/<defaults>.yaml``."""
    for job in JOBS.values():
        if defaults in job.defaults:
            return job.config
    raise KeyError(f"no job config named {defaults!r}; known: "
                   + ", ".join(d for job in JOBS.values() for d in job.defaults))


def load_config(name: str, path: str | Path | None = None, overrides: dict | None = None, where: str | None = None):
    """The typed config of the job whose defaults are ``configs/<name>.yaml``: those defaults, then the
    user's file ``path`` (checked as part of the whole), then ``overrides`` (command-line options).
    Errors name ``where`` (default: the user's file, else the packaged one) and the key path."""
    data = packaged(name)
    where = where or (str(path) if path is not None else f"configs/{name}.yaml")
    if path is not None:
        data = merge(data, own_file(name, read_yaml(Path(path)), where))
    return config_class(name).parse(merge(data, overrides or {}), where)


def own_file(name: str, data: dict, where: str) -> dict:
    """A user's file for the job whose defaults are ``configs/<name>.yaml``. A copy of a packaged file may
    keep its ``extends:`` line, which must name what those defaults already extend."""
    base = data.pop("extends", None)
    if base is not None and base != read_yaml(CONFIG_DIR / f"{name}.yaml").get("extends"):
        raise ConfigError(f"{where}: extends: {base!r}: a {name} config builds on configs/{name}.yaml; "
                          "leave the line out")
    return data
