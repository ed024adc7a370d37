"""`infu`: one command per stage of the InfU data engine."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import click

from infu_model.memory import MODES
from infu_model.published import ARCFACE, FLUX_DEV, GENERATION, INFU_V1, INSIGHTFACE_ROOT, LORAS, VARIANTS
from curation.engine import ConfigError
from pipelines.logs import job_logs, quiet_import_notices, quiet_loading


# options every Ray job takes, with one wording
ray_address_option = click.option(
    "--ray-address", default=None, metavar="ADDR",
    help="Join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting an embedded one.")
overwrite_option = click.option("--overwrite", is_flag=True,
                                help="Delete this job's earlier output in the folder (only what it wrote) and start "
                                     "over (needed when the config or inputs changed). A folder that is not this "
                                     "job's output is refused either way.")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")


def row_job_options(command):
    """--ray-address, --overwrite and --quiet: what curate, caption and synth all take."""
    return ray_address_option(overwrite_option(quiet_option(command)))


def config(name: str, path, overrides=None) -> dict:
    """The job's config, a key its defaults do not have being a one-line error."""
    from pipelines.jobs import load_config  # every job's module: not for `infu --help`

    try:
        return load_config(name, path, overrides)
    except (ConfigError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None


def say(message: str) -> None:
    click.echo(message, err=True)


def model_ref(ctx, param, value):
    """A click callback: a model reference's syntax checked when the command line is read."""
    from infu_model.hub import ModelError, ModelRef

    try:
        for v in (value if isinstance(value, tuple) else (value,)):
            if v is not None:
                ModelRef.parse(_lora(v)[0] if param.name == "loras" else v)
    except ModelError as e:
        raise click.BadParameter(str(e)) from None
    return value


MODEL_HELP = "A folder, hf://OWNER/NAME[@REVISION][/PATH] (fetched into the Hub cache) or https://...#sha256=HEX."


class Location(click.Path):
    """A folder that must exist here, or a prefix in object storage (``s3://BUCKET/KEY``: the job checks it)."""

    def convert(self, value, param, ctx):
        from infu_model.storage import is_uri

        return value if is_uri(value) else super().convert(value, param, ctx)


def one_line_errors():
    """The mistakes a user can make (a changed config, a missing or unusable input, a bad value, an
    output folder that is not the job's), which end as one line instead of a traceback."""
    from infu_model.images import DecodeError, TooLarge
    from pipelines.faults import WorkersLost
    from pipelines.job import ConfigMismatch, OutputRefused
    from pipelines.ray_runtime import ClusterUnreachable
    from pipelines.sink import Superseded

    return (ConfigMismatch, OutputRefused, ClusterUnreachable, FileNotFoundError, ValueError, DecodeError, TooLarge,
            WorkersLost, Superseded)


def run_job(name: str, inputs, out_dir, cfg, **options):
    """The job ``name`` of the job table (pipelines/jobs.py) on ``inputs``: checked once, run in its
    own folder (``in_own_folder``), its summary on the terminal."""
    from pipelines.job import check_job, run_checked
    from pipelines.jobs import JOBS
    from pipelines.ray_runtime import check_cluster

    job, checked = JOBS[name], []

    def check():
        check_cluster(options.get("ray_address"))  # a cluster that does not answer: one line, at once
        checked.append(check_job(name, job.check, inputs, out_dir, cfg, say))  # before the folder is claimed

    def work(log, claim):
        return run_checked(job, inputs, out_dir, cfg, checked[0], claim, log=log, **options)

    stats = in_own_folder(out_dir, name, work, check=check)
    click.echo(job.summary(stats, out_dir))
    return stats


def in_own_folder(out_dir, name: str, work, check=None):
    """``check()`` (everything the job can be refused for), then ``out_dir`` claimed for the job
    ``name`` (pipelines.job.claim_output), once, then ``work(log, claim)`` with its noise routed to
    ``out_dir/_work/logs`` (a refused job leaves no folder and no log behind), then the report.
    The mistakes a user can make, and a full disk, end as one line."""
    from pipelines.job import claim_output

    with one_line(out_dir):
        if check is not None:
            check()
        claim = claim_output(out_dir, name, checked=True)  # check() (or, for infu run, read_pipeline) checked it
    try:
        with one_line(out_dir), job_logs(out_dir, name):  # records the run: ok, error or interrupted
            result = work(say, claim)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: what finished stays; the same command resumes
        from pipelines.ray_runtime import Terminated

        stage = f" in stage {e.stage}" if getattr(e, "stage", None) else ""
        say(f"interrupted{stage}: rerun the same command to resume")
        raise SystemExit(143 if isinstance(e, Terminated) else 130) from None
    finally:
        claim.release()  # the run has ended: its folder is free for the next one
    from pipelines.faults import disk_full_line
    from pipelines.ray_runtime import stop_monitor
    from pipelines.report import write_report

    stop_monitor()  # Ray's shutdown at exit then need not wait on it

    try:
        say(f"report: {write_report(out_dir)}")
    except Exception as e:  # the job's outputs stand; `infu report DIR` retries and shows the full error
        say(f"report: not written ({disk_full_line(e, out_dir) or f'{type(e).__name__}: {e}'})")
    return result


@contextlib.contextmanager
def one_line(out_dir):
    """A user's mistake (``one_line_errors``) or a full disk, wherever it was met, as one line."""
    from pipelines.faults import disk_full_line

    try:
        yield
    except Exception as e:
        line = disk_full_line(e, out_dir) or (str(e) if isinstance(e, one_line_errors()) else None)
        if line is None:
            raise
        raise click.ClickException(line) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """The open InfU data engine: curate portrait data, synthesise SPMS pairs, train and run InfU.

    Every command runs on an embedded local Ray by default; pass --ray-address
    (or run it under `ray job submit`) to use a cluster.
    """
    from pipelines.ray_runtime import stop_on_sigterm

    quiet_import_notices()
    stop_on_sigterm()


@main.command()
@click.option("--source", "sources", multiple=True, required=True, metavar="KIND[:LABEL]=PATH",
              help="A dataset to curate, repeatable. KIND is one of vggface2, millioncelebs, celeba, "
                   "celebv_hq, ffhq, vfhq, easyportrait, celebv_text, cosmicmanhq, folder. "
                   "LABEL names the source in the output (default: KIND); use it to give one KIND twice.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: kept/, rejected/, stats.json, config.yaml; a local folder or a prefix in "
                   "object storage (s3://BUCKET/KEY, any pyarrow.fs scheme). Rerunning the same command on it "
                   "resumes an interrupted run.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML merged over the defaults in configs/curate.yaml (thresholds, stages, buckets).")
@row_job_options
def curate(sources, out_dir, config_path, ray_address, overwrite, quiet) -> None:
    """Filter portrait datasets into clean, accounted SPSS Parquet.

    Each input image (or sampled video frame) ends in exactly one of
    DIR/kept/*.parquet or DIR/rejected/*.parquet (with its status and reason);
    DIR/stats.json adds them up per source and reason.
    """
    from pipelines.job import SourceSpec

    try:
        specs = [SourceSpec.parse(s) for s in sources]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    cfg = config("curate", config_path, {"progress": False} if quiet else None)
    run_job("curate", specs, out_dir, cfg, ray_address=ray_address, overwrite=overwrite)


@main.command()
@click.argument("in_dir", type=Location(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: kept/, rejected/, stats.json; a local folder or s3://BUCKET/KEY. "
                   "Rerunning on it resumes.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML merged over configs/caption.yaml (captioner model folders, devices, batch sizes).")
@row_job_options
def caption(in_dir, out_dir, config_path, ray_address, overwrite, quiet) -> None:
    """Add BLIP-2 / VLM captions to SPSS Parquet (IN_DIR: a curate output or a folder of Parquet, on
    disk or in object storage).

    Every caption keeps its source (dataset, blip2, internvl, ...) so training can mix
    them; all go through the same hygiene (prompt echoes, boilerplate, names, loops)."""
    cfg = config("caption", config_path, {"progress": False} if quiet else None)
    run_job("caption", in_dir, out_dir, cfg, ray_address=ray_address, overwrite=overwrite)


@main.command()
@click.argument("in_dir", type=Location(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: faces.parquet, identities.parquet, pairs.parquet, stats.json; a local folder "
                   "or s3://BUCKET/KEY. Rerunning on it with the same settings finds it done.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML merged over configs/identities.yaml (same-person thresholds, neighbours, index, pairs).")
@row_job_options
def identities(in_dir, out_dir, config_path, ray_address, overwrite, quiet) -> None:
    """Cluster the faces of a curated output (IN_DIR: a curate or caption output, or a folder of its
    Parquet, on disk or in object storage) into identities across the whole dataset.

    Writes an identity per face, a table of identities with their members, and real cross-photo
    pairs (other photos of the same person as a face's references); where a dataset labels its
    people, reports how the clusters agree with the labels (docs/identities.md)."""
    cfg = config("identities", config_path, {"progress": False} if quiet else None)
    run_job("identities", in_dir, out_dir, cfg, ray_address=ray_address, overwrite=overwrite)


@main.command()
@click.option("--spss", "spss_dir", required=True, type=Location(exists=True, file_okay=False),
              help="SPSS Parquet: a curate/caption output (its kept/) or a folder of Parquet, on disk or "
                   "s3://BUCKET/KEY. Its records are the real identity sources.")
@click.option("--model", "model", callback=model_ref, help="Stage-1 InfU weights: the published infu_flux_v1.0 "
              "folder (model.variant picks sim_stage1 by default) or one of our checkpoints; default: model.path "
              f"({INFU_V1}). {MODEL_HELP}")
@click.option("--base", "base", callback=model_ref, help=f"FLUX.1-dev in diffusers layout; default: model.base "
              f"({FLUX_DEV}). {MODEL_HELP}")
@click.option("--prompts", "prompts", type=click.Path(exists=True, dir_okay=False),
              help="Prompt bank: YAML/JSONL with id, text, gender (female|male|any), or text lines "
                   "'GENDER<TAB>prompt'. Default: configs/prompts/synth.yaml.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output: kept/ (SPMS pairs), rejected/ (with reason and scores), stats.json; a local folder or "
                   "s3://BUCKET/KEY. Rerun to resume.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML merged over configs/synth.yaml (generation, LoRAs, face swap, ID filter, pools).")
@row_job_options
def synth(spss_dir, model, base, prompts, out_dir, config_path, ray_address, overwrite, quiet) -> None:
    """Synthesise SPMS pairs: each real identity image x gender-fitting prompts x seeds, generated by a
    stage-1 InfU actor pool (+ LoRAs, face swap, post-processing), then ID-filtered (one face, same
    person, normal pose, aesthetics, no near-duplicates). Every planned pair is kept or rejected with
    its reason."""
    over = {"model": {k: v for k, v in (("path", model), ("base", base)) if v}}
    if prompts:
        over["prompts"] = {"file": prompts}
    if quiet:
        over["progress"] = False
    cfg = config("synth", config_path, over)
    run_job("synth", spss_dir, out_dir, cfg, ray_address=ray_address, overwrite=overwrite)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training YAML: configs/stage1.yaml (pretraining on SPSS) or configs/stage2.yaml (SFT on SPMS), "
                   "or your own file (merged over the stage's defaults).")
@ray_address_option
@click.option("--export-published", is_flag=True,
              help="Also write the final weights in the published infu_flux_v1.0 layout (OUT/published/<variant>/: "
                   "sim_stage1 after stage 1, aes_stage2 after stage 2).")
@click.option("--export-comfyui", is_flag=True,
              help="Also write them as the files ByteDance's ComfyUI InfiniteYou node loads (OUT/comfyui/<variant>/: "
                   "InfuseNet in bf16 and FP8, image_proj_model.bin); see `infu export comfyui`.")
@click.option("--build-cache", is_flag=True,
              help="First store the frozen encoders' outputs (text embeddings; VAE latents with cache.latents), "
                   "one shard per training Parquet file, then train with them (the text encoders stay on the CPU).")
@overwrite_option
def train(config_path, ray_address, export_published, export_comfyui, build_cache, overwrite) -> None:
    """Train InfuseNet + projection (flow matching, frozen FLUX) on Ray Train.

    ray.num_workers workers (use_gpu: one per GPU) train one model, FSDP-sharded by
    default (ray.fsdp); model.dtype, model.gradient_checkpointing and train.optimizer set
    precision and memory. Rerunning the same command resumes from the latest checkpoint in
    the output folder; OUT/final loads directly in `infu generate --infu OUT/final`.

    A rerun may change train.max_steps (to train further), the checkpoint and log intervals,
    the encoder cache and the ray block; any other change (lr, data, model, seed, sizes...)
    is refused in one line naming it, unless --overwrite starts over."""
    from pipelines.config import read_yaml

    try:
        stage = read_yaml(Path(config_path)).get("stage", 1)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if stage not in (1, 2):
        raise click.ClickException(f"{config_path}: stage: {stage!r} is not 1 (pretraining) or 2 (SFT)")
    cfg = config(f"stage{stage}", config_path, {**({"export_published": True} if export_published else {}),
                                                **({"export_comfyui": True} if export_comfyui else {}),
                                                **({"cache": {"enabled": True}} if build_cache else {})})
    run_job("train", cfg.data.parquet, cfg.output, cfg, ray_address=ray_address, build_cache=build_cache,
            overwrite=overwrite)


@main.command("eval")
@click.option("--model", "model", callback=model_ref, help="InfU weights to evaluate: published folder, one variant "
              f"or one of our checkpoints; default: model.path ({INFU_V1}). {MODEL_HELP}")
@click.option("--base", "base", callback=model_ref, help=f"FLUX.1-dev in diffusers layout; default: model.base "
              f"({FLUX_DEV}). {MODEL_HELP}")
@click.option("--ids", "ids_dir", type=Location(exists=True, file_okay=False),
              help="Identity photos: DIR/ids.yaml ({name, gender, reference, held_out}) or one sub-folder per "
                   "identity (reference.* or the first photo is the reference, the rest are held out).")
@click.option("--benchmark", type=click.Path(exists=True, dir_okay=False),
              help="Prompt file with gender tags (default: configs/prompts/benchmark.yaml, 200 prompts).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Results: images/, scores.parquet, summary.md/json, grids/. Rerun to resume.")
@click.option("--variant", type=click.Choice(["aes_stage2", "sim_stage1"]), default=None,
              help="Published variant to load (default from the config: aes_stage2).")
@click.option("--face-backend", type=click.Choice(["insightface", "dlib"]), default=None,
              help="Face backend of the ID metric (default insightface, the paper's ArcFace; dlib runs offline).")
@click.option("--label", default=None, help="The method's name in the summary table (default: the model folder).")
@click.option("--compare", "compare_dirs", nargs=2, type=Location(exists=True, file_okay=False), default=None,
              metavar="A B", help="Instead of evaluating: compare two result folders (paired bootstrap CI of B - A).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML merged over configs/eval.yaml (seeds, generation, scorer paths, bootstrap).")
@ray_address_option
@overwrite_option
@quiet_option
def eval_cmd(model, base, ids_dir, benchmark, out_dir, variant, face_backend, label, compare_dirs, config_path,
             ray_address, overwrite, quiet) -> None:
    """Score a model on the portrait benchmark: ID loss, CLIPScore, PickScore (paper Table 1) and the
    copy-paste index; or compare two results with --compare A B.

    Scorers whose weights are not configured are reported as not run, never guessed. A rerun
    resumes; one that would change the images (model, prompts, seeds, generation...) is refused
    in one line unless --overwrite. The scorers may change: every run scores every image again."""
    from pipelines.eval import compare, compare_markdown

    over = {"model": {k: v for k, v in (("path", model), ("base", base), ("variant", variant)) if v}}
    if benchmark:
        over["benchmark"] = benchmark
    if face_backend:
        over["id_metric"] = {"faces": {"backend": face_backend}}
    if label:
        over["label"] = label
    if quiet:
        over["progress"] = False
    cfg = config("eval", config_path, over)
    if compare_dirs:
        try:
            res = compare(*compare_dirs, cfg.bootstrap)
        except FileNotFoundError as e:
            raise click.ClickException(str(e)) from None
        click.echo(compare_markdown(res, cfg.bootstrap.ci))
        return
    missing = [name for name, v in (("--model", cfg.model.path), ("--base", cfg.model.base), ("--ids", ids_dir),
                                    ("--out", out_dir)) if not v]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or use --compare A B)")
    run_job("eval", ids_dir, out_dir, cfg, ray_address=ray_address, overwrite=overwrite)


@main.command("run")
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
@ray_address_option
@quiet_option
def run_cmd(pipeline, ray_address, quiet) -> None:
    """Run the whole engine from one PIPELINE file (see configs/pipeline.yaml): curate -> caption ->
    train stage 1 -> synth -> train stage 2 -> eval, each stage optional, each writing its usual output
    under the pipeline's root. The file is checked whole before any work starts; a finished stage is
    skipped when its config and inputs are unchanged, and an interrupted run resumes in the stage it
    stopped in."""
    from pipelines.ray_runtime import ClusterUnreachable, check_cluster
    from pipelines.run import format_run_summary, read_pipeline, run_steps

    try:
        check_cluster(ray_address)
        spec, steps = read_pipeline(pipeline, quiet, log=say)
    except (FileNotFoundError, ValueError, ClusterUnreachable) as e:
        raise click.ClickException(str(e)) from None
    report = in_own_folder(spec["root"], "run", lambda log, claim: run_steps(spec, steps, ray_address=ray_address, log=log))
    click.echo(format_run_summary(report))


@main.command("report")
@click.argument("out_dir", type=Location(exists=True, file_okay=False))
def report_cmd(out_dir) -> None:
    """Write OUT_DIR/report.html: one self-contained page (no server, no network) of a job's output
    or of a whole `infu run` root: the curation funnel and sampled rejects per reason with the score
    that decided them, kept rows by bucket, caption samples, SPMS pairs beside their source photo
    and acceptance per prompt axis, training curves, the benchmark table and grids, and a header
    with the commands, versions, time per stage and whether the accounting adds up. Every job
    writes it when it ends; this command rewrites it. OUT_DIR may be a prefix in object storage
    (s3://BUCKET/KEY) where `infu curate` wrote."""
    from pipelines.report import write_report

    try:
        click.echo(f"wrote {write_report(out_dir)}")
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None


@main.command()
@click.option("--config", "configs", multiple=True, metavar="NAME=FILE",
              help="Check this config instead of the packaged one; NAME is curate, caption, stage1, stage2, synth "
                   "or eval. Repeatable.")
@ray_address_option
@click.option("--json", "as_json", is_flag=True, help="Print the machine's facts and every placement as JSON.")
@click.option("--strict", is_flag=True, help="Exit 1 when a model will not run where its config asks.")
def doctor(configs, ray_address, as_json, strict) -> None:
    """Say what each job would run on here: torch and its CUDA, ONNX Runtime's providers, bf16 and FP8
    support, free GPU memory, Ray's view of the cluster, and each configured model's placement. Warns
    where a config asks for cuda and a model would fall back to the CPU (or cannot start)."""
    import json
    from dataclasses import asdict

    from infu_model.hub import hub_cache
    from infu_model.runtime import machine
    from pipelines.doctor import doctor_lines, placements
    from pipelines.jobs import JOBS
    from pipelines.models import job_needs, status_line
    from pipelines.ray_runtime import ClusterUnreachable, check_cluster

    try:
        check_cluster(ray_address)
    except ClusterUnreachable as e:
        raise click.ClickException(str(e)) from None
    # each job's packaged config (train: stage1), or the one given
    chosen = {**{job.defaults[0]: None for job in JOBS.values()}, **given_configs(configs)}
    cfgs = {name: config(name, path) for name, path in chosen.items()}
    found = {name: placements(cfg) for name, cfg in cfgs.items()}
    warnings = sum(bool(p.problem) for placed in found.values() for p in placed)
    models = [(jobs, status_line(need)) for jobs, need in job_needs(cfgs)]  # the cache only: no network
    if as_json:
        jobs = {name: [asdict(p) for p in placed] for name, placed in found.items()}
        click.echo(json.dumps({"machine": machine(), "jobs": jobs,
                               "models": [{"jobs": j, "model": line} for j, line in models]}, indent=1))
    else:
        click.echo("\n".join(doctor_lines(machine(), found, ray_address)))
        click.echo(f"\nmodels (Hub cache {hub_cache()}; `infu models pull --job NAME` fetches a job's)")
        click.echo("\n".join(f"{j:<22} {line}" for j, line in models))
        click.echo(f"\n{warnings} warning(s)" if warnings else "\nevery model runs where its config asks")
    if strict and warnings:
        raise SystemExit(1)


@main.group()
def models() -> None:
    """The models the jobs load: list them, pull them into the cache, verify their hashes.

    A model is a folder, hf://OWNER/NAME[@REVISION][/PATH] (a Hub repo, fetched into huggingface_hub's
    cache: HF_HOME, shared with diffusers and `hf download`; HF_TOKEN or `hf auth login` for gated ones;
    HF_HUB_OFFLINE=1 reads the cache only) or https://...#sha256=HEX. Every job fetches what it lacks
    before it starts; `pull` does it ahead of time (e.g. on a login node, into a shared HF_HOME)."""


config_option = click.option(
    "--config", "configs", multiple=True, metavar="NAME=FILE",
    help="A config of yours over the packaged one; NAME is curate, caption, stage1, stage2, synth or eval. "
         "Repeatable.")
job_option = click.option("--job", "jobs", multiple=True, metavar="NAME",
                          help="Only the models of this config (curate, caption, stage1, stage2, synth, eval). "
                               "Repeatable.")


def job_configs(command):
    """--job and --config: which configs an `infu models` command reads."""
    return job_option(config_option(command))


def given_configs(configs) -> dict:
    """{config name: file} of the --config NAME=FILE options, each name checked."""
    from pipelines.jobs import config_class

    given = {}
    for item in configs:
        name, _, path = item.partition("=")
        try:
            config_class(name)
        except KeyError as e:
            raise click.ClickException(f"--config {item}: {e.args[0]}") from None
        if not path:
            raise click.ClickException(f"--config {item}: give NAME=FILE")
        given[name] = path
    return given


def chosen_configs(configs, jobs=()) -> dict:
    """{config name: typed config}: every packaged one (or those ``jobs`` name), with ``configs`` over them."""
    from pipelines.jobs import JOBS

    names = [d for job in JOBS.values() for d in job.defaults]
    given = given_configs(configs)
    for name in jobs:
        if name not in names:
            raise click.ClickException(f"--job {name}: not one of {', '.join(names)}")
    return {name: config(name, given.get(name)) for name in (jobs or names)}


@models.command("list")
@job_configs
@click.option("--offline", is_flag=True, help="Ask the Hub nothing: sizes and licences of models not cached stay "
                                              "unknown.")
def models_list(jobs, configs, offline) -> None:
    """Every model the packaged (or given) configs name: reference, what it is for, size, licence,
    gated or not, and whether it is cached (and where)."""
    from pipelines.models import job_needs, status_line

    try:
        for name, need in job_needs(chosen_configs(configs, jobs)):
            click.echo(f"{name:<22} {status_line(need, online=not offline)}")
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None


@models.command("pull")
@click.argument("refs", nargs=-1)
@job_configs
def models_pull(refs, jobs, configs) -> None:
    """Fetch REFS (models by reference) and/or every model of the --job configs into the cache, only the
    files their loaders read. A reference one of the configs names is fetched as those jobs read it."""
    from infu_model.hub import AUTO, ModelRef, Need
    from pipelines.models import fetch_models, job_needs, known_selections

    if not refs and not jobs:
        raise click.UsageError("name the models (REFS) or the jobs (--job) whose models to pull")
    try:
        needs = [need for _, need in job_needs(chosen_configs(configs, jobs))] if jobs else []
        every = chosen_configs(configs)
        for ref in refs:
            needs += [Need(ModelRef.parse(ref), s, "pulled by name") for s in known_selections(ref, every) or [AUTO]]
        for need, path in fetch_models(needs, say):
            click.echo(f"{need.ref}: {path}")
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None


@models.command("verify")
@click.argument("refs", nargs=-1)
@job_configs
def models_verify(refs, jobs, configs) -> None:
    """Check every cached file of REFS (or of the --job configs' models; none given: every packaged job's)
    against its published hash (sha256 of LFS files, the git blob id of the rest, a URL's own sha256).
    A file that does not match is removed, so `infu models pull` fetches it again; exits 1 then."""
    from infu_model.hub import ModelNotCached, verify
    from pipelines.models import job_needs

    names = list(refs) or sorted({n.ref.text for _, n in job_needs(chosen_configs(configs, jobs))
                                  if n.ref.kind != "local"})
    bad = []
    for ref in names:
        try:
            found = verify(ref)
        except ModelNotCached:
            click.echo(f"{ref}: not cached")
            continue
        except FileNotFoundError as e:
            raise click.ClickException(str(e)) from None
        bad += found
        click.echo("\n".join(found) if found else f"{ref}: every file matches its published hash")
    if bad:
        click.echo(f"{len(bad)} file(s) did not match and were removed: `infu models pull REF` fetches them again")
        raise SystemExit(1)


def empty_or_own(out_dir, entries: tuple[str, ...], command: str) -> None:
    """``command`` writes only into a new or empty folder, or over its own earlier output (``entries``)."""
    out = Path(out_dir)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in entries) if out.is_dir() else []
    if foreign:
        raise click.ClickException(f"{out} holds {foreign[0]!r}, which `infu {command}` did not write: give it a new "
                                   "or empty folder (it writes only there or over its own earlier output)")


@main.group()
def export() -> None:
    """Write InfU weights (ours or the published ones) for the tools people generate with."""


@export.command("comfyui")
@click.argument("src")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="A new or empty folder (or an earlier export): DIR/<variant>/ gets the files, DIR/README.md says "
                   "where each goes in a ComfyUI install.")
@click.option("--variant", default=None,
              help="Which variant of a published folder to read, and the folder written (sim_stage1, aes_stage2 or a "
                   "name of yours). Default: the weights' own (a stage-1 training output is sim_stage1, stage 2 "
                   "aes_stage2).")
@click.option("--no-fp8", is_flag=True, help="Write only the bf16 InfuseNet (no *_fp8e4m3fn file for 24 GB cards).")
def export_comfyui_cmd(src, out_dir, variant, no_fp8) -> None:
    """Write files for ByteDance's ComfyUI InfiniteYou node (github bytedance/ComfyUI_InfiniteYou) from
    InfU weights SRC: a training output (its folder or its final/ or published/), a published infu_flux_v1.0
    folder or one variant, or hf://... . Writes DIR/<variant>/infusenet_<sim|aes>_bf16.safetensors,
    its FP8 (e4m3fn) twin and image_proj_model.bin, which the node's "Load InfuseNet" and "ID Embedding
    Model Loader" list once the folder is in ComfyUI/models/infinite_you/. docs/inference.md has the
    workflow and the FLUX files ComfyUI needs beside them."""
    from pipelines.export import export as export_weights
    from pipelines.logs import quiet_loading

    quiet_loading()
    try:
        export_weights(src, out_dir, variant, fp8=not no_fp8, log=say)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise click.ClickException(str(e)) from None


@main.command("sample-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
def sample_data(out_dir) -> None:
    """Write a small folder of real photos that ship inside installed packages
    (scikit-image, matplotlib, insightface) and hard cases derived from them
    (resized duplicate, EXIF rotation, 16-bit, CMYK, palette, alpha, blur, a strip,
    a small face on a big canvas, truncated / non-image / empty files, a decompression bomb)."""
    from curation.samples import SAMPLE_FOLDERS, write_sample_set

    empty_or_own(out_dir, SAMPLE_FOLDERS, "sample-data")
    files = write_sample_set(out_dir)
    click.echo(f"wrote {len(files)} files to {Path(out_dir).resolve()}")


@main.command("make-tiny")
@click.argument("out_dir", type=click.Path(file_okay=False))
def make_tiny_cmd(out_dir) -> None:
    """Write a tiny random FLUX base (diffusers layout, tokenizers built locally) to OUT_DIR/base
    and tiny InfU weights in the published layout to OUT_DIR/infu_flux_v1.0/{aes_stage2,sim_stage1}.
    For tests and the demo: the real loaders, in seconds, on a CPU."""
    from infu_model.tiny import TINY_FOLDERS, make_tiny

    quiet_loading()
    empty_or_own(out_dir, TINY_FOLDERS, "make-tiny")
    paths = make_tiny(out_dir)
    click.echo(f"tiny base: {paths['base']}\ntiny InfU: {paths['infu']}")


def _lora_weight(text: str) -> float | None:
    """The weight after the last ':' of a --lora value, when there is one."""
    path, _, weight = text.rpartition(":")
    try:
        return float(weight) if path else None
    except ValueError:
        return None


def _lora(text: str) -> tuple[str, float]:
    """(model reference, weight) of a --lora value; InfU's own LoRAs by name (realism, anti_blur)."""
    weight = _lora_weight(text)
    path, weight = (text, 1.0) if weight is None else (text.rpartition(":")[0], weight)
    return LORAS.get(path, path), weight


def model_options(command):
    """The options that load InfU for inference: what `infu generate` and `infu app` share. Every model
    defaults to its published source, fetched once into the Hub cache (HF_HOME)."""
    options = [
        click.option("--base", "base", default=FLUX_DEV, show_default=True, callback=model_ref,
                     help=f"FLUX base model in diffusers layout (gated: accept its licence on the Hub and log in). "
                          f"{MODEL_HELP}"),
        click.option("--infu", "infu", default=INFU_V1, show_default=True, callback=model_ref,
                     help="InfU weights: the published infu_flux_v1.0 folder (--variant picks one), one variant "
                          "folder, or one of our checkpoints (infu train's OUT/final)."),
        click.option("--variant", type=click.Choice(VARIANTS), default=VARIANTS[0],
                     show_default=True, help="Published variant: aes_stage2 (after SFT) or sim_stage1 (more identity, "
                                             "less aesthetics)."),
        click.option("--lora", "loras", multiple=True, metavar="MODEL[:WEIGHT]", callback=model_ref,
                     help="LoRA on the base model, repeatable: a .safetensors file or folder, hf://..., or "
                          f"{' / '.join(LORAS)}: InfU's own (from the InfU repo); WEIGHT defaults to 1."),
        click.option("--face-backend", type=click.Choice(["auto", "insightface", "dlib"]), default="auto",
                     show_default=True, help="Face analysis for the ID image; auto: what the weights were trained "
                                             "with (insightface for the published ones)."),
        click.option("--insightface-root", default=INSIGHTFACE_ROOT, show_default=True, callback=model_ref,
                     help="insightface backend: the folder holding models/antelopev2/ (only its SCRFD detector is "
                          "read)."),
        click.option("--arcface", default=ARCFACE, show_default=True, callback=model_ref,
                     help="insightface backend: facexlib's IR-SE50 ArcFace weights (a URL needs its sha256)."),
        click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16",
                     show_default=True, help="Weights dtype (float32 on CPU is safest)."),
        click.option("--device", default="cuda", show_default=True,
                     help="cuda or cpu (cpu is used when no GPU is there, and the command says so)."),
        click.option("--memory", type=click.Choice(MODES), default="auto", show_default=True,
                     help="How InfU sits in GPU memory: full (everything resident, about 40 GiB at 864x1152), 24gb "
                          "(FP8 linear layers, compiled, T5 streamed; Ada/Hopper GPUs), 16gb (8-bit weights, T5 "
                          "streamed, model offload), low_vram (block by block; about 9 GiB); auto: the least saving "
                          "the free memory fits, and it says which."),
        click.option("--compile", "compile_", is_flag=True,
                     help="torch.compile the FLUX blocks of the transformer and InfuseNet (fused QKV); pays off over "
                          "many images: compiling takes a while at the first call."),
    ]

    @functools.wraps(command)
    def described(base, infu, variant, loras, face_backend, insightface_root, arcface, dtype, device, memory,
                  compile_, **rest):
        from infu_model.hub import ModelRef
        from infu_model.model_options import ModelOptions

        faces = {"insightface": {"root": insightface_root, "arcface": arcface}}
        faces = faces if face_backend == "auto" else {**faces, "backend": face_backend}
        model = ModelOptions(ModelRef.parse(base), ModelRef.parse(infu), variant, dtype, device, memory, compile_,
                             faces)
        return command(model=model, loras=[_lora(x) for x in loras], **rest)

    for option in reversed(options):
        described = option(described)
    return described


def ready(model, loras) -> None:
    """Before anything loads: a memory mode this machine cannot run is refused, then every model is
    fetched (download bars, one line), and loading says nothing more."""
    from infu_model.memory import resolve as resolve_memory
    from infu_model.runtime import torch_device
    from pipelines.models import fetch_models

    resolve_memory(model.memory, torch_device(model.device))
    fetch_models(model.needs(loras), say)
    quiet_loading()


@main.command()
@model_options
@click.option("--id-image", "id_images", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Photo of the person; its largest face gives the identity. Give it again for each further "
                   "person: each is placed in its own region (--region, or equal vertical strips, left to right).")
@click.option("--region", "regions", multiple=True, metavar="X1,Y1,X2,Y2",
              help="The box (output pixels) of each --id-image's person, in the same order; or a mask image "
                   "(white: inside). Default with several people: equal vertical strips.")
@click.option("--prompt", required=True, help="Text prompt.")
@click.option("--control-image", type=click.Path(exists=True, dir_okay=False),
              help="Photo whose face position/pose (five keypoints) the output follows; none: free placement.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (CPU torch.Generator).")
@click.option("--steps", type=int, default=GENERATION["steps"], show_default=True, help="Denoising steps.")
@click.option("--width", type=int, default=GENERATION["width"], show_default=True,
              help="Output width (multiple of 16).")
@click.option("--height", type=int, default=GENERATION["height"], show_default=True,
              help="Output height (multiple of 16).")
@click.option("--guidance", type=float, default=GENERATION["guidance"], show_default=True,
              help="Base model guidance scale.")
@click.option("--scale", type=float, default=GENERATION["scale"], show_default=True,
              help="InfuseNet conditioning scale.")
@click.option("--start", type=float, default=GENERATION["start"], show_default=True,
              help="InfuseNet guidance start (fraction of steps).")
@click.option("--end", type=float, default=GENERATION["end"], show_default=True,
              help="InfuseNet guidance end (fraction of steps).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
def generate(model, loras, id_images, regions, prompt, control_image, seed, steps, width, height, guidance, scale,
             start, end, out_path) -> None:
    """Generate a photo of the person in --id-image following --prompt (InfU v1.0); several --id-image
    for several people, each in its region. With no model given, FLUX.1-dev and InfU v1.0 come from
    the Hub (fetched once, only the files read)."""
    from infu_model.images import DecodeError, TooLarge, open_rgb
    from infu_model.memory import NoFP8
    from infu_model.pipeline import NoFaceError
    from infu_model.runtime import placement

    where = placement("InfU on FLUX", model.device, "torch")
    if where.problem:
        say(f"generate: warning: {where.line()}")
    try:  # the photos first: a file that is not an image is found before the model loads
        id_photos = [open_rgb(p) for p in id_images]
        control_photo = open_rgb(control_image) if control_image else None
        boxes = [region_of(r) for r in regions] or None
    except (DecodeError, TooLarge) as e:
        raise click.ClickException(f"{e} (not a usable image)") from None
    if boxes is not None and len(boxes) != len(id_photos):
        raise click.UsageError(f"{len(boxes)} --region for {len(id_photos)} --id-image: give one for each person")
    try:
        ready(model, loras)
        pipe = model.load(loras, log=say)
        pipe.set_progress_bar_config(disable=True)  # one line when it is done, not a bar per step
        image = pipe(id_photos[0] if len(id_photos) == 1 else id_photos, prompt, control_image=control_photo,
                     regions=boxes,
                     width=width, height=height, num_inference_steps=steps, guidance_scale=guidance, seed=seed,
                     infusenet_conditioning_scale=scale, infusenet_guidance_start=start,
                     infusenet_guidance_end=end).images[0]
    except (FileNotFoundError, NoFaceError, NoFP8, ValueError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)
    click.echo(f"wrote {out_path} ({width}x{height}, {steps} steps, seed {seed})")


def region_of(text: str):
    """``X1,Y1,X2,Y2`` as a box, or the path of a mask image."""
    from infu_model.images import open_rgb

    parts = text.split(",")
    if len(parts) == 4:
        try:
            return tuple(float(p) for p in parts)
        except ValueError:
            pass
    if not Path(text).is_file():
        raise click.BadParameter(f"{text!r} is neither X1,Y1,X2,Y2 nor a mask image", param_hint="--region")
    return open_rgb(text)


@main.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on (0.0.0.0: every interface; there is no login, mind who can reach it).")
@click.option("--port", type=int, default=7860, show_default=True, help="Port to serve on.")
def app(model, loras, host, port) -> None:
    """The web demo: upload an ID photo (and optionally a control photo), write a prompt, get the image,
    with InfU's controls (conditioning scale, guidance window, guidance, steps, seed, size, LoRAs,
    memory mode: --memory is the one it starts with). Needs gradio (pip install 'infu-engine[app]').
    Serves until interrupted."""
    import importlib.util

    from infu_model.memory import NoFP8
    from infu_model.runtime import placement
    from pipelines.app import Generator, serve

    if importlib.util.find_spec("gradio") is None:
        raise click.ClickException("infu app needs gradio: pip install 'infu-engine[app]'") from None
    say(f"app: {placement('InfU on FLUX', model.device, 'torch').line()}")
    gen = Generator(model, loras)
    try:
        ready(model, loras)
        gen.pipe(model.memory)  # the model loads before the page opens: a broken folder stops here, in one line
    except (FileNotFoundError, NoFP8, ValueError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    say(f"app: serving http://{host}:{port} (Ctrl+C stops)")
    serve(gen, host, port)


if __name__ == "__main__":
    main()
