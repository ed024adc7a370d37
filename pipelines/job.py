"""What every row job (curate, caption, synth) shares: its output folder's layout and the guard
against reusing it with another config, finding input Parquet, reading columns back, the
accounting check, and the run-wide near-duplicate decision that turns candidates into kept/.

An output may be a local folder or a prefix in object storage (``s3://BUCKET/KEY``): the same
layout, with a heartbeat and a seal (``pipelines/bucket_runs.py``) where a folder has locks."""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import posixpath
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import yaml

from curation.dedup import KEEP_RULE, find_duplicates
from curation.engine import KEPT, REJECTED, between, plain
from curation.registry import spss_schema
from infu_model.storage import (ObjectPath, arrow, as_path, bucket_of, copy, exists, is_uri, parallel, parquet_file,
                                read_bytes, read_parquet, remove_tree)
from pipelines.bucket_runs import BucketLease, Heartbeat, LiveElsewhere, live_record, stale_s, untagged
from pipelines.config import fingerprint, flat, output_config
from pipelines.sink import Lease, conform, content_name, drop_images, set_status, write_atomic

if TYPE_CHECKING:  # the job table imports every job's module, and each of them this one
    from pipelines.jobs import Job


class ConfigMismatch(Exception):
    """The output directory holds a run with another config or other sources."""


@dataclass(frozen=True)
class RayOptions:
    """A job's ``ray`` block: the embedded Ray session it starts (ignored when joining a cluster)."""
    num_cpus: int | None = between(1)            # null: every core of this machine
    object_store_memory: int | None = between(1)  # bytes of shared memory for blocks in flight
    reserve_per_operator: bool                    # Ray Data's per-operator CPU reservation


@dataclass(frozen=True)
class DedupOptions:
    """Near duplicates over the whole run (pHash Hamming distance, Manku's block tables)."""
    enabled: bool
    max_distance: int = between(0, 63)
    blocks: int = between(2, 64)
    evidence_step: float = between(0, 1, default=0.1)   # watermark/NSFW scores closer than this are noise to the keep rule


@dataclass(frozen=True)
class OutputOptions:
    """A row job's ``output`` block."""
    rows_per_file: int = between(1)      # rows per Parquet file in kept/ and rejected/ (a write task's unit)
    rejected_images: bool                # keep the image bytes in rejected/ rows


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    label: str
    path: str

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        """``KIND=PATH`` or ``KIND:LABEL=PATH`` (a label lets one kind appear twice)."""
        if "=" not in text:
            raise ValueError(f"--source {text!r}: expected KIND=PATH")
        name, path = text.split("=", 1)
        kind, _, label = name.partition(":")
        return cls(kind.strip().lower(), (label or kind).strip(), path.strip())


class Layout:
    """Where a row job keeps what under its output folder ``out``: kept/ and rejected/ (the
    output), _work/ (resume state: manifest, todo, candidates and the dedup decisions). In object
    storage the workers' rejected rows wait in _work/rejected/ too: the driver publishes the ones
    that count (``BucketLease.counts``) at the end, so a dead run's late object never reaches the output."""

    def __init__(self, out):
        self.out = as_path(out)
        self.kept, self.rejected, self.work = self.out / "kept", self.out / "rejected", self.out / "_work"
        self.groups = self.out / "groups"   # multi-ID records (curate's faces.groups.keep), written beside kept/
        self.manifest, self.todo, self.candidates = (self.work / d for d in ("manifest", "todo", "candidates"))
        bucket = is_uri(self.out)
        # where the workers write rows that leave (and a job without a run-wide decision, its survivors)
        self.parts_rejected = self.work / "rejected" if bucket else self.rejected
        self.parts_kept = self.candidates if bucket else self.kept
        self.dedup = self.work / "dedup.parquet"
        self.lease_file = lease_file(self.out)
        self.lease: Lease | BucketLease | None = None  # taken by prepare_out; the run's writes carry it

    def written(self) -> list[str]:
        """Every output file whose rows count so far: the workers' (those the run's lease counts) and
        the driver's (kept/, rejected/)."""
        workers = parquet_files(self.candidates, self.parts_rejected)
        return sorted({*self.lease.counts(workers), *parquet_files(self.kept, self.rejected, self.groups)})


def lease_file(out):
    """Where a job's run holds its output folder (``pipelines.sink.Lease``; a seal in object storage)."""
    return as_path(out) / "_work" / ("seal.json" if is_uri(out) else "lease")


class OutputRefused(Exception):
    """The output folder is not the job's to write in (a user's folder, another job's output)."""


LIVE = Path("_work") / "live"   # a folder's live lock: held (flock) by the driver of the run writing it


def live_run(out) -> dict | None:
    """The run that holds ``out`` now (its run id, host, pid, start), or None: a live run's driver holds
    its folder's lock for as long as it runs; the kernel drops it when the driver dies, however it dies.
    In object storage: its heartbeat is fresh (``pipelines/bucket_runs.py``)."""
    path = out / LIVE
    if isinstance(out, ObjectPath):
        return live_record(path)
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except ValueError:
            return {}
    finally:
        os.close(fd)


def hold_live(out, job: str):
    """Take ``out``'s live lock (refused when another run holds it), saying who holds it: the open
    descriptor of its flock, or in a bucket the ``Heartbeat`` that keeps its record fresh."""
    path = out / LIVE
    if isinstance(out, ObjectPath):
        try:
            return Heartbeat.take(path, job)
        except LiveElsewhere as e:
            raise OutputRefused(in_use(out, e.holder)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputRefused(in_use(out, live_run(out) or {})) from None
    info = {"run": uuid.uuid4().hex[:12], "job": job, "host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


@dataclass
class Claim:
    """A run's hold on its output folder, taken once (``claim_output``) by whoever starts the run and
    handed to the job: the folder's live lock, held until ``release`` (or the end of a ``with``)."""
    out: Path
    job: str
    hold: object = None   # the flock's descriptor, or a bucket's Heartbeat

    def release(self) -> None:
        """Let the folder go (the run has ended): the next run may take it."""
        hold, self.hold = self.hold, None
        if isinstance(hold, Heartbeat):
            hold.stop()
        elif hold is not None:
            os.close(hold)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def in_use(out, holder: dict) -> str:
    who = ", ".join(f"{k} {holder[k]}" for k in ("run", "host", "pid", "started") if k in holder)
    if "seen_s" in holder:
        who += f", last heartbeat {holder['seen_s']} s ago (taken as dead after {stale_s():.0f} s without one)"
    return (f"{out} is in use by a live `infu {holder.get('job', '?')}` run ({who or 'unknown'}): refusing to start a "
            "second run on it; wait for that one to end, or stop it and rerun this command to resume")


# ------------------------------------------------------------------------------------ the runner --
@dataclass(frozen=True)
class Checked:
    """What a job's check found, handed to its run: a job run by the runner is checked once."""
    found: object = None


def check_job(name: str, check, inputs, out, cfg, log=print, found=None) -> Checked:
    """Everything the job ``name`` can be refused for, once: its own ``check`` (unless ``found``, what it
    found when it ran earlier), its output folder, its models (fetched into the cache before the
    folder is claimed or a worker starts)."""
    from pipelines.models import fetch_models

    if found is None:
        found = check(inputs, cfg)
    check_output(out, name)
    fetch_models(cfg.needs(), log)
    return Checked(found)


def run_checked(job: Job, inputs, out, cfg, checked: Checked, claim: Claim, *, log=print, **options) -> dict:
    """The job after ``check_job``, in the folder it claimed: where its models run, then its work."""
    from pipelines.doctor import job_lines

    for line in job_lines(job.name, cfg):  # where its models run, and each that will not run where asked
        log(line)
    return job.run(inputs, out, cfg, checked=checked, claim=claim, log=log, **options)


def job_run(name: str, check):
    """The run function of the job ``name``, as the runner and a library caller both call it. The runner
    hands it what ``check_job`` found (``checked``) and the folder it claimed (``claim``); called without
    them it checks (``check``: the job's own) and claims here, once, and lets the folder go when it ends."""
    def wrap(run):
        @functools.wraps(run)
        def called(inputs, out, cfg, *, checked: Checked | None = None, claim: Claim | None = None, **options):
            if claim is not None:
                return run(inputs, out, cfg, checked=checked, claim=claim, **options)
            checked = checked or check_job(name, check, inputs, out, cfg, log=None)
            with claim_output(out, name, checked=True) as claim:
                return run(inputs, out, cfg, checked=checked, claim=claim, **options)
        return called
    return wrap


MARK = "run.json"   # what makes a folder a job's own: {"job": <its kind>, ...}
ROW_JOB = ("kept", "rejected", "groups", "_work", "stats.json", "config.yaml", "report.html", "pipeline_stage.json")
OWNED = {  # what each kind of job writes at the top of its folder: --overwrite removes these and nothing else
    "curate": ROW_JOB, "caption": ROW_JOB, "synth": ROW_JOB,
    "train": ("checkpoints", "final", "published", "comfyui", "cache", "train_log.jsonl", "train_log.csv",
              "loss_curve.png", "config.yaml", "report.html", "_work", "pipeline_stage.json"),
    "eval": ("images", "grids", "scores.parquet", "summary.json", "summary.md", "config.yaml", "report.html",
             "_work", "pipeline_stage.json"),
    "identities": ("faces.parquet", "identities.parquet", "pairs.parquet", "stats.json", "config.yaml", "report.html",
                   "_work", "pipeline_stage.json"),
    "run": ("curated", "captioned", "train-stage1", "spms", "train-stage2", "eval", "_work", "report.html"),
}


def owner(folder: Path) -> str | None:
    """The kind of job whose output ``folder`` is (its run.json says), or None. Row jobs' folders
    from before run.json named its job count as the asking job's (``legacy``)."""
    try:
        mark = json.loads((as_path(folder) / MARK).read_text())
    except (OSError, ValueError):
        return None
    return mark.get("job", "legacy") if isinstance(mark, dict) else None


def finished_checkpoints(out: Path) -> list[Path]:
    """A training output's whole checkpoints, oldest first (``step-N.tmp`` is a save in progress or a killed one)."""
    root = as_path(out) / "checkpoints"  # (in object storage each is a prefix: listed, not globbed)
    return sorted(p for p in (root.iterdir() if root.is_dir() else ())
                  if p.name.startswith("step-") and not p.name.endswith(".tmp"))


def claim_output(out: str | Path, job: str, checked: bool = False) -> Claim:
    """Make ``out`` the output folder of a ``job`` run, or refuse with one line: a job writes only
    into a missing or empty folder or one holding its own earlier output (its run.json), never
    among a user's files or into another job's output. ``checked``: the caller ran ``check_output``."""
    out = as_path(out)
    if not checked:
        check_output(out, job)
    try:
        out.mkdir(parents=True, exist_ok=True)
        claim = Claim(out, job, hold_live(out, job))
    except OSError as e:
        raise OutputRefused(f"cannot write the output folder {out}: {e.strerror or e}") from None
    try:
        mark = out / MARK
        old = json.loads(mark.read_text()) if owner(out) else {}
        write_json(mark, {**old, "job": job})
    except OSError as e:
        claim.release()
        raise OutputRefused(f"cannot write the output folder {out}: {e.strerror or e}") from None
    return claim


def check_output(out: str | Path, job: str) -> Path:
    """``out`` as a folder ``job`` may claim (``claim_output``), refused in one line otherwise; writes nothing."""
    out = as_path(out)
    if isinstance(out, ObjectPath):
        bucket = bucket_of(out)
        if not exists(bucket):
            raise OutputRefused(f"{out}: the bucket {bucket} does not exist (or is not visible at this endpoint)")
        if bucket == out.uri:
            raise OutputRefused(f"{out}: give a prefix inside the bucket (s3://BUCKET/NAME), not the bucket itself")
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        found = owner(out)
        if found is None:
            raise OutputRefused(f"{out} is not empty and holds no earlier `infu {job}` output ({MARK}): refusing to "
                                "write into it (nothing was changed); give a new or empty folder")
        if found not in (job, "legacy") or (found == "legacy" and OWNED[job] is not ROW_JOB):
            raise OutputRefused(f"{out} holds the output of `infu {found}`, not of `infu {job}`: refusing to write "
                                "into it (nothing was changed); give another folder")
        holder = live_run(out)
        if holder is not None:
            raise OutputRefused(in_use(out, holder))
    return out


def write_json(path, obj) -> None:
    """``obj`` as JSON, written whole (``write_whole``)."""
    write_whole(path, json.dumps(obj, indent=1).encode())


def write_whole(path, data: bytes) -> None:
    """``data`` to ``path``, under a temporary name then renamed, so never seen half-written (an object
    in object storage is written whole)."""
    if isinstance(path, ObjectPath):
        path.write_bytes(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def clear(folder, job: str, keep: tuple) -> None:
    """Delete what a ``job`` wrote in ``folder`` (its ``OWNED`` entries), except the paths in ``keep``
    (the running job's log folder and lease). A file the job did not write stays."""
    for name in OWNED[job]:
        _remove(folder / name, keep)


def _remove(path, keep: tuple) -> None:
    if path in keep or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():
        if any(k.is_relative_to(path) for k in keep):
            for child in path.iterdir():
                _remove(child, keep)
        else:
            remove_tree(path)
    else:
        path.unlink()


def start_run(claim: Claim, cfg, sources: list[SourceSpec], overwrite: bool, take_lease=None,
              given: dict | None = None, contents: dict | None = None):
    """Record in the folder ``claim`` holds a run of its job with ``cfg`` on ``sources``. A folder holding
    a run whose output-changing settings differ (``pipelines.config.output_config``: not those a resumed
    run may change) is refused in one line naming them and their earlier values, unless ``overwrite``:
    then what the job wrote there is cleared first. ``contents``: {name: file} whose bytes count too (a
    prompt file edited in place). ``take_lease()``: the run's hold on its workers' writes, taken before
    anything is cleared; returned. ``given``: what config.yaml records beside the config."""
    out, job = claim.out, claim.job
    inputs = [s.__dict__ for s in sources]
    digests = {f"{name} (contents)": hashlib.sha256(read_bytes(path)).hexdigest()[:16]
               for name, path in (contents or {}).items()}
    fp = fingerprint(output_config(cfg), inputs, *([digests] if digests else []))
    settings = {**flat(output_config(cfg)), "sources": inputs, **digests}
    old = json.loads((out / MARK).read_text())
    if old.get("fingerprint") not in (None, fp) and not overwrite:
        raise ConfigMismatch(changed_settings(out, job, old, settings, fp))
    # first, so that no write of a killed run still in flight lands (or, in a bucket, counts) in what follows
    lease = take_lease() if take_lease is not None else None
    if overwrite:
        clear(out, job, keep=(out / "_work" / "logs", lease_file(out), out / LIVE))
        if isinstance(lease, BucketLease):  # the cleared run's objects, even a retried one landing late, never count
            lease = BucketLease.start(lease.path)
    write_json(out / MARK, {"job": job, "fingerprint": fp, "sources": inputs, "settings": settings})
    write_whole(out / "config.yaml", yaml.safe_dump({**(given or {}), **plain(cfg)}, sort_keys=False).encode())
    return lease


def changed_settings(out, job: str, old: dict, now: dict, fp: str) -> str:
    """The one line refusing a rerun whose settings (fingerprint ``fp``) differ from those of the run
    ``out`` holds."""
    before = old.get("settings")
    if before is None:  # written before run.json kept its settings
        what = f"fingerprint {old.get('fingerprint')}, now {fp}"
    else:
        keys = [k for k in sorted({*before, *now}) if before.get(k, "(unset)") != now.get(k, "(unset)")]
        what = "; ".join(f"{k}: {_shown(before.get(k, '(unset)'))} then, {_shown(now.get(k, '(unset)'))} now"
                         for k in keys[:3]) + (f"; and {len(keys) - 3} more" if len(keys) > 3 else "")
    return (f"{out} holds an `infu {job}` run with other settings ({what}): rerun with those settings to resume "
            "it, give another output folder, or add --overwrite to start over")


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def prepare_out(lay: Layout, claim: Claim, cfg, specs: list[SourceSpec], overwrite: bool,
                contents: dict | None = None) -> None:
    """A row job's ``start_run`` in the folder it claimed, its lease on the workers' writes taken, and
    the partial files of a killed run removed from its own folders."""
    lay.lease = start_run(claim, cfg, specs, overwrite, take_lease=lambda: take_lease(lay),
                          given={"sources_given": [s.__dict__ for s in specs]}, contents=contents)
    for own in (lay.kept, lay.rejected, lay.work) if not is_uri(lay.out) else ():
        for tmp in own.rglob("*.tmp") if own.is_dir() else ():
            tmp.unlink()


def take_lease(lay: Layout):
    """The run's hold on ``lay.out``: a lease on a local folder, a seal of the workers' objects in a bucket."""
    if is_uri(lay.out):
        return BucketLease.take(lay.lease_file, [lay.candidates, lay.parts_rejected])
    return Lease.take(lay.lease_file)


def parquet_files(*dirs) -> list[str]:
    """The Parquet files directly in ``dirs``, sorted (a prefix in object storage: one listing each, in parallel)."""
    if any(isinstance(d, ObjectPath) for d in dirs):
        return sorted(str(p) for found in parallel(lambda d: d.glob("*.parquet"), dirs) for p in found)
    return sorted(str(p) for d in dirs if d.exists() for p in d.glob("*.parquet"))



def rows_added(*dirs):
    """A counter of the rows in Parquet files that appear in ``dirs`` from now on (footers read once per
    file): how far a run's workers have got."""
    seen = {f: None for f in parquet_files(*dirs)}

    def count() -> int:
        for f in parquet_files(*dirs):
            if f not in seen:
                try:
                    seen[f] = parquet_file(f).metadata.num_rows
                except (pa.ArrowException, OSError):  # (removed or replaced meanwhile: the next call sees it)
                    pass
        return sum(n for n in seen.values() if n)

    return count


def read_column(files: list[str], columns: list[str], schema: pa.Schema | None = None) -> pa.Table:
    """``columns`` of ``files``, typed (and nullable) as ``schema`` (default: the SPSS record) names them
    whether or not any file holds a row: reads of kept/, rejected/ and an empty folder always concatenate."""
    schema = schema or spss_schema()
    want = pa.schema([schema.field(c).with_nullable(True) for c in columns])
    if not files:
        return want.empty_table()
    return dataset(files).to_table(columns=columns).cast(want)


def dataset(files: list[str]) -> pads.Dataset:
    """Parquet ``files`` (local or objects of one store) as one dataset."""
    fs, paths = arrow(files)
    return pads.dataset(paths, filesystem=fs, format="parquet")


def record_schema(files: list[str]) -> pa.Schema:
    """The SPSS record, plus the columns ``files`` hold beyond it (a stage registered where they were
    curated): a job that rewrites the rows passes those on."""
    known = spss_schema()
    extra = [f for f in dataset(files).schema if f.name not in known.names]
    return pa.schema([*known, *extra])


def input_files(in_dir: str | Path) -> list[str]:
    d = as_path(in_dir)
    files = parquet_files(d / "kept") or parquet_files(d)
    if not files and owner(d):
        raise ValueError(f"{d} kept no rows (its stats.json says why): there is nothing to read")
    if not files:
        raise FileNotFoundError(f"no Parquet under {d} (expected {d}/kept/*.parquet or {d}/*.parquet)")
    return files


def check_inputs(files: list[str], needed: list[str], what: str) -> int:
    """The rows in ``files``, each file checked to be Parquet holding the columns ``needed``
    (footers only, read in parallel); else a one-line error naming the file."""
    def rows(f: str) -> int:
        try:
            meta = parquet_file(f).metadata
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{f}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
        missing = [c for c in needed if c not in meta.schema.to_arrow_schema().names]
        if missing:
            raise ValueError(f"{f}: lacks the column(s) {', '.join(missing)} that {what} reads")
        return meta.num_rows

    return sum(parallel(rows, files))


def dedup_and_finalize(lay: Layout, dedup: DedupOptions, rejected_images: bool, schema: pa.Schema,
                       key: str = "id", prefer=KEEP_RULE, image: str = "image") -> None:
    """Decide near duplicates over every candidate, then split candidates into kept/ and rejected/
    (and multi-ID records, where the record has them, into groups/).

    Among near duplicates the survivor is the best by ``prefer`` ((column, order), best first; the
    columns ``schema`` lacks are left out), then the smaller ``key``. In object storage the rejected
    rows the workers wrote are published to rejected/ too, and objects that do not count (a dead run's
    late writes) are removed."""
    files = lay.lease.counts(parquet_files(lay.candidates))
    if not lay.dedup.exists():
        ranks = [c for c, _ in prefer if c in schema.names]
        cols = read_column(files, [key, "phash", "width", "height", *ranks], schema).rename_columns(
            ["id", "phash", "width", "height", *ranks])
        if not dedup.enabled:
            cols = cols.slice(0, 0)
        dups = find_duplicates(cols, dedup.max_distance, dedup.blocks, prefer, dedup.evidence_step)
        write_atomic(dups, lay.dedup)
    dups = read_parquet(lay.dedup)
    dup_of = dict(zip(dups["id"].to_pylist(), dups["duplicate_of"].to_pylist()))
    done = {posixpath.basename(f) for f in parquet_files(lay.kept)}

    def split(f: str) -> None:  # one candidate file into kept/ and rejected/, then gone (a killed run redoes the rest)
        kept_path = lay.kept / untagged(posixpath.basename(f))
        if kept_path.name not in done:
            t = read_parquet(f)
            is_dup = pc.is_in(t[key], value_set=dups["id"])
            rej = t.filter(is_dup)
            if rej.num_rows:
                rej = set_status(rej, REJECTED, "duplicate")
                rej = rej.set_column(rej.schema.get_field_index("duplicate_of"), "duplicate_of",
                                     pa.array([dup_of[i] for i in rej[key].to_pylist()], pa.string()))
                if not rejected_images:
                    rej = drop_images(rej, image)
                write_atomic(conform(rej, schema), lay.rejected / content_name(rej, "dup", key))
            keep = set_status(t.filter(pc.invert(is_dup)), KEPT)
            if "faces_bbox" in schema.names:  # multi-ID records go beside kept/, before the file is marked done
                group = pc.is_valid(keep["faces_bbox"])
                if pc.any(group).as_py():
                    write_atomic(conform(keep.filter(group), schema), lay.groups / kept_path.name)
                keep = keep.filter(pc.invert(group))
            write_atomic(conform(keep, schema), kept_path)
        as_path(f).unlink()

    parallel(split, files)
    if lay.parts_rejected != lay.rejected:
        publish(lay)


def publish(lay: Layout) -> None:
    """In object storage, at the end of a run: the worker objects that count copied into the output
    (survivors no run-wide decision took into kept/, the rest into rejected/), and every worker object
    removed, so those that do not count (a dead run's late writes) never reach it."""
    for parts, final in ((lay.candidates, lay.kept), (lay.parts_rejected, lay.rejected)):
        parallel(lambda f: copy(f, final / untagged(posixpath.basename(f))), lay.lease.counts(parquet_files(parts)))
        remove_tree(parts)  # (one listing and a batched delete)


def count_unaccounted(expected_ids, written_ids) -> int:
    """How many expected ids appear in no output file."""
    return int(pc.sum(pc.invert(pc.is_in(expected_ids, value_set=written_ids))).as_py() or 0)
