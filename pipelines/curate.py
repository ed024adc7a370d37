"""`infu curate`: sources -> manifest -> Ray Data stages -> dedup -> kept/ + rejected/.

Output directory::

    DIR/kept/*.parquet        SPSS records (status = kept)
    DIR/rejected/*.parquet    every rejected or quarantined row, with status and reason
    DIR/stats.json            counts per source and per reason; they add up to the inputs
    DIR/config.yaml           the resolved config of the run (+ sources)
    DIR/_work/                manifest, undecided rows and dedup decisions (resume state)

Resume: the manifest is listed once (``_DONE`` marks it complete); every output
file is written atomically, so a rerun reads the ids already written, processes
only the rest, and ends with exactly the rows an uninterrupted run gives.
"""
from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from curation.engine import KEPT, REJECTED, Chain, Resources, Stage, between
from curation.quality import DecodeLimits, FilterOptions, QualityOptions, QualityStage
from curation.records import MANIFEST_SCHEMA
from curation.registry import NamedStage, row_schema, spss_schema, stage_class, stage_reasons
from curation.sources import SourceError, SourcesOptions, make_source
from infu_model.runtime import is_cuda
from infu_model.storage import arrow, parquet_file, read_parquet, remove_tree
from pipelines.config import JobConfig, merge, named_block, packaged, stage_models
from pipelines.job import (DedupOptions, Layout, OutputOptions, RayOptions, SourceSpec, count_unaccounted,
                           dataset, dedup_and_finalize, job_run, parquet_files, prepare_out, read_column, rows_added,
                           write_json)
from pipelines.logs import progress_lines
from pipelines.sink import write_atomic

GROUP = "groups"   # stats' count of multi-ID records (groups/, faces.groups.keep): kept, but not in kept/


@dataclass(frozen=True)
class ListingOptions:
    shard_rows: int = between(1)   # manifest rows per shard file; the listing streams, never holds a dataset


@dataclass(frozen=True)
class QualityBlock:
    resources: Resources           # the read + decode + cheap-filter tasks


@dataclass(frozen=True)
class ExecutionOptions:
    mode: Literal["auto", "fused", "pools"]   # every stage in one actor, or an actor pool per model stage
    resources: Resources                      # the fused actors


@dataclass(frozen=True)
class CurateConfig(JobConfig):
    """``configs/curate.yaml``, typed."""
    ray: RayOptions
    progress: bool
    listing: ListingOptions
    sources: SourcesOptions
    decode: DecodeLimits
    filters: FilterOptions
    dedup: DedupOptions
    execution: ExecutionOptions
    quality: QualityBlock
    stages: tuple[NamedStage, ...]          # the model stages, in order (built here, once)
    output: OutputOptions
    buckets: tuple[tuple[int, int], ...] = between(64)

    @classmethod
    def complete(cls, data: dict) -> dict:
        """Each ``stages`` block laid over the default block of its name (a list replaces the list)."""
        defaults = packaged("curate")["stages"]
        blocks = [{"name": b} if isinstance(b, str) else b for b in data.get("stages") or []]
        return {**data, "stages": [merge(named_block(defaults, "name", b.get("name")), b) if isinstance(b, dict)
                                   else b for b in blocks]}

    def models(self) -> list[tuple[str, str, str]]:
        return stage_models(s for s in self.stages if s.enabled)

    def needs(self) -> list:
        return [n for s in self.stages if s.enabled for n in s.needs()]

    def fused(self, stages: list[Stage]) -> bool:
        """Whether the stages run in one actor (``execution.mode``; auto: when there are model stages
        and none runs on cuda: without them the decode tasks alone scale best as tasks)."""
        mode = self.execution.mode
        return mode == "fused" or (mode == "auto" and bool(stages)
                                   and not any(is_cuda(s.device) for s in stages))

    def quality_stage(self, keep_analysis: bool = False) -> QualityStage:
        """The read + decode + cheap-filter stage (``keep_analysis``: hand the decoded image on)."""
        return QualityStage(QualityOptions(self.decode, self.filters, self.buckets, keep_analysis),
                            self.quality.resources)

    def chain(self) -> list[Stage]:
        """The stages every row meets, in order: the quality stage, then the enabled model stages."""
        enabled = [s for s in self.stages if s.enabled]
        return [self.quality_stage(keep_analysis=bool(enabled)), *enabled]


def write_manifest(lay: Layout, cfg: CurateConfig, specs: list[SourceSpec], log=print) -> dict:
    """List every source into manifest shards; returns per-source listing facts."""
    done = lay.manifest / "_DONE"
    if done.exists():
        return json.loads(done.read_text())
    remove_tree(lay.manifest)
    lay.manifest.mkdir(parents=True)
    shard_rows = cfg.listing.shard_rows
    facts, buf, shard = {}, [], 0

    def flush():
        nonlocal buf, shard
        if buf:
            write_atomic(pa.Table.from_pylist(buf, schema=MANIFEST_SCHEMA), lay.manifest / f"part-{shard:06d}.parquet")
            buf, shard = [], shard + 1

    for spec in specs:
        fact = {"kind": spec.kind, "path": spec.path, "listed": 0, "errors": []}
        facts[spec.label] = fact
        try:
            src = make_source(spec.kind, spec.label, spec.path, cfg.sources)
            src.check()
            for row in src.items():
                buf.append(row)
                fact["listed"] += 1
                if len(buf) >= shard_rows:
                    flush()
        except SourceError as e:
            fact["errors"].append(str(e))
            log(f"error: {e} (source skipped)")
            continue
        fact["errors"] += src.errors
        fact["ignored_files"] = src.ignored_files
        if fact["listed"] == 0:
            fact["errors"].append(f"{spec.label}: no images found under {src.root}")
            log(f"warning: source {spec.label} ({src.root}) has no images")
    flush()
    write_json(done, facts)
    return facts


# ------------------------------------------------------------------ resume ---
def make_todo(lay: Layout) -> tuple[list[str], int]:
    """Manifest shards restricted to ids not yet in any output file."""
    manifest = parquet_files(lay.manifest)
    done = read_column(lay.written(), ["id"])["id"]
    if len(done) == 0:
        return manifest, sum(parquet_file(f).metadata.num_rows for f in manifest)
    remove_tree(lay.todo)
    todo, left = [], 0
    for f in manifest:
        t = read_parquet(f)
        t = t.filter(pc.invert(pc.is_in(t["id"], value_set=done)))
        if t.num_rows:
            path = lay.todo / posixpath.basename(f)
            write_atomic(t, path)
            todo.append(str(path))
            left += t.num_rows
    return todo, left


# --------------------------------------------------------------- the job ----
def process(lay: Layout, files: list[str], cfg: CurateConfig, log=print) -> None:
    """Decode and filter the listed rows: the quality stage, then the enabled model stages, fused
    in one actor pool or as the quality tasks and an actor pool per stage (``execution.mode``)."""
    import ray

    from pipelines.ray_stages import READS, add_stage, plan_pools
    from pipelines.sink import RowSink

    quality, *stages = cfg.chain()
    schema = spss_schema(transient_too=True)  # every run writes the whole record (columns of stages off: null)
    if cfg.fused(stages):
        chain = [Chain([quality, *stages], cfg.execution.resources)]
        operators = plan_pools(chain, reads=READS, log=log)
        batch = operators[0].resources.batch_size
    else:
        operators = [quality, *plan_pools(stages, reads=quality.resources.num_cpus, log=log)]
        batch = quality.resources.batch_size
    fs, paths = arrow(files)
    ds = ray.data.read_parquet(paths, filesystem=fs, schema=MANIFEST_SCHEMA, num_cpus=READS / 2)
    # Manifest rows are tiny, so one read task would take a whole shard and, fused with
    # the decode stage, run it on one core. A streaming split into batch-sized blocks
    # lets every core (or node) decode; exactly batch-sized (strict), so that each task is
    # one batch: otherwise a block's remainder joins the next block into a task of up to
    # twice the work, and the last of them keeps one actor busy while the others wait.
    ds = ds.repartition(target_num_rows_per_block=batch, strict=True)
    for op in operators:
        ds = add_stage(ds, op, schema)
    ds.write_datasink(RowSink(lay.candidates, lay.parts_rejected, cfg.output.rows_per_file,
                              cfg.output.rejected_images, spss_schema(), lease=lay.lease),
                      ray_remote_args={"num_cpus": READS / 2})


def compute_stats(lay: Layout, facts: dict, stage_reports: dict, elapsed: float) -> dict:
    """Counts read back from the output files, checked against the manifest."""
    cols = ["id", "source", "status", "reason"]
    kept = read_column(parquet_files(lay.kept), cols + ["bucket"])
    groups = read_column(parquet_files(lay.groups), cols)  # multi-ID records: counted as groups, not kept
    groups = groups.set_column(2, "status", pa.array([GROUP] * groups.num_rows, pa.string()))
    out = pa.concat_tables([kept.drop_columns(["bucket"]), read_column(parquet_files(lay.rejected), cols), groups])
    buckets = pc.value_counts(kept["bucket"]).to_pylist()
    manifest_ids = read_column(parquet_files(lay.manifest), ["id"], MANIFEST_SCHEMA)["id"]
    missing = count_unaccounted(manifest_ids, out["id"])
    by_source: dict[str, dict] = {}
    # every reason a stage that ran may give, counted or not: "nsfw 0" says the filter ran and found none
    by_reason = {r: 0 for name, rep in stage_reports.items() if rep.get("ran") for r in stage_reasons(name)}
    for src, status, reason, n in zip(*_count(out).values()):
        s = by_source.setdefault(src, {"inputs": 0, KEPT: 0, GROUP: 0, REJECTED: {}, "quarantined": {}})
        s["inputs"] += n
        if status in (KEPT, GROUP):
            s[status] += n
        else:
            s[status][reason] = s[status].get(reason, 0) + n
            by_reason[reason] = by_reason.get(reason, 0) + n
    for label, fact in facts.items():
        by_source.setdefault(label, {"inputs": 0, KEPT: 0, GROUP: 0, REJECTED: {}, "quarantined": {}})
        by_source[label].update(listed=fact["listed"], errors=fact["errors"],
                                ignored_files=fact.get("ignored_files", 0))
    total = {k: sum(s[k] if k in ("inputs", KEPT, GROUP) else sum(s[k].values()) for s in by_source.values())
             for k in ("inputs", KEPT, GROUP, REJECTED, "quarantined")}
    return {
        **total, "manifest_rows": len(manifest_ids), "unaccounted": missing,
        "duplicate_ids": out.num_rows - len(pc.unique(out["id"])),
        "adds_up": total["inputs"] == total[KEPT] + total[GROUP] + total[REJECTED] + total["quarantined"]
        == len(manifest_ids)
        and missing == 0,
        "by_reason": dict(sorted(by_reason.items())), "by_source": by_source, "stages": stage_reports,
        "by_bucket": {b["values"]: b["counts"] for b in sorted(buckets, key=lambda b: -b["counts"])},
        "watermark_examples": watermark_examples(lay) if by_reason.get("watermark") else [],
        "scores": score_summary(lay, stage_reports),
        "elapsed_s": round(elapsed, 2),
    }


def score_summary(lay: Layout, stage_reports: dict) -> dict:
    """How each score of the stages that ran is spread over the rows it was measured on (kept and
    rejected alike): where a threshold falls among them."""
    cols = [c for name, rep in stage_reports.items() if rep.get("ran") and name != "dedup"
            for c in stage_class(name).scores]
    t = read_column(parquet_files(lay.kept, lay.rejected), cols)
    out = {}
    for c in cols:
        v = pc.drop_null(t[c])
        if len(v):
            q = pc.quantile(v, q=[0.0, 0.5, 0.95, 1.0]).to_pylist()
            out[c] = {"rows": len(v), **{k: round(x, 4) for k, x in zip(("min", "median", "p95", "max"), q)}}
    return out


def watermark_examples(lay: Layout, n: int = 5) -> list[dict]:
    """A few rows rejected as watermarked, with what the detector read on them."""
    columns = ["source", "path", "watermark", "watermark_text", "watermark_classifier", "watermark_label"]
    return dataset(parquet_files(lay.rejected)).head(n, columns=columns,
                                                     filter=pc.field("reason") == "watermark").to_pylist()


def _count(t: pa.Table) -> dict:
    t = t.set_column(3, "reason", pc.fill_null(t["reason"], ""))
    g = t.group_by(["source", "status", "reason"]).aggregate([("id", "count")])
    return {"source": g["source"].to_pylist(), "status": g["status"].to_pylist(),
            "reason": g["reason"].to_pylist(), "n": g["id_count"].to_pylist()}


def stage_reports(cfg: CurateConfig) -> dict:
    rep = {"quality": {"ran": True, "note": "decode, too_large, low_resolution, bad_aspect, blurry"}}
    d = cfg.dedup
    rep["dedup"] = ({"ran": True, "note": f"pHash Hamming <= {d.max_distance}, whole run"}
                    if d.enabled else {"ran": False, "note": "disabled in config"})
    for stage in cfg.stages:
        rep[stage.name] = stage.report()
    return rep


def check_curate(specs: list[SourceSpec], cfg: CurateConfig) -> None:
    """Everything a curate run can be refused for, before it touches its output (the config was
    checked when it was parsed): stages chained so that one reads what none before it writes, source
    names, a source path that is not a folder, and no image in any source."""
    row_schema(cfg.chain())  # a stage reading a column no stage before it writes: refused here
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a source is given twice: {labels}; use KIND:LABEL=PATH to name them apart")
    sources = []
    for spec in specs:
        src = make_source(spec.kind, spec.label, spec.path, cfg.sources)
        src.check()
        sources.append(src)
    if not any(next(iter(src.items()), None) for src in sources):
        raise ValueError("nothing to curate: no source holds an image ("
                         + ", ".join(f"{s.kind}={s.root}" for s in sources) + ")")
    return sources


@job_run("curate", check_curate)
def run_curate(specs: list[SourceSpec], out, cfg: CurateConfig, *, checked, claim,
               ray_address: str | None = None, overwrite: bool = False, log=print) -> dict:
    t0 = time.time()
    lay = Layout(out)
    timings = {}
    prepare_out(lay, claim, cfg, specs, overwrite)
    facts = write_manifest(lay, cfg, specs, log)
    files, left = make_todo(lay)
    timings["listing"] = time.time() - t0
    if left:
        if lay.dedup.exists():
            lay.dedup.unlink()  # new candidates: earlier dedup decisions are stale
        from pipelines.ray_runtime import init_ray

        t = time.time()
        init_ray(ray_address, cfg.ray, cfg.progress)
        timings["ray_start"] = time.time() - t
        log(f"curate: {left} rows to process ({sum(f['listed'] for f in facts.values())} listed)")
        t = time.time()
        with progress_lines("curate", left, rows_added(lay.candidates, lay.parts_rejected), log):
            process(lay, files, cfg, log)
        timings["stages"] = time.time() - t
    t = time.time()
    dedup_and_finalize(lay, cfg.dedup, cfg.output.rejected_images, spss_schema())
    remove_tree(lay.todo)
    timings["dedup"] = time.time() - t
    stats = compute_stats(lay, facts, stage_reports(cfg), time.time() - t0)
    stats["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    write_json(lay.out / "stats.json", stats)  # last, written whole: the file that says the run is done
    return stats
