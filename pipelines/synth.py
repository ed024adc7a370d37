"""`infu synth`: SPSS identities in, ID-filtered SPMS pairs out.

    SPSS kept/*.parquet -> select sources -> plan (prompts x seeds per source, gender-paired)
      -> generate (InfU actor pool, LoRAs) -> face swap -> post-process -> ID filter
      -> OUT/_work/candidates + OUT/rejected -> near-duplicate targets -> OUT/kept

Every planned pair ends in exactly one of OUT/kept/ or OUT/rejected/ (rejected or
quarantined, with its reason and scores); OUT/stats.json adds them up. A rerun on
the same OUT resumes: planned pairs already written are never generated again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curation.engine import KEPT, QUARANTINED, REJECTED, between
from pipelines.config import JobConfig, packaged_path, stage_models
from infu_model.storage import arrow, as_path
from pipelines.job import (DedupOptions, Layout, OutputOptions, RayOptions, SourceSpec, check_inputs, job_run,
                           count_unaccounted, dedup_and_finalize, input_files, parquet_files, prepare_out, read_column,
                           rows_added, write_json)
from pipelines.logs import progress_lines
from synth.face_swap import FaceSwapStage
from synth.gender import GenderOptions, gender_needs
from synth.generate import GenerateStage, GenerationBlock, LoraOptions, ModelOptions, generate_stage
from synth.id_filter import IDFilterStage
from synth.plan import Planner, PromptsOptions
from synth.prompts import load_prompts
from synth.postprocess import PostprocessStage
from synth.records import SPMS_SCHEMA, SYNTH_ROW_SCHEMA, derived_seed

SOURCE_COLUMNS = ["id", "source", "identity", "gender", "image", "bbox", "kps", "id_embedding", "id_backend"]


# ------------------------------------------------------------ the config ---
@dataclass(frozen=True)
class SelectOptions:
    """Which SPSS records become identity sources."""
    fraction: float = between(0, 1)         # a stable hash sample of the records
    per_identity: int | None = between(1)   # at most this many images per dataset identity
    max_sources: int | None = between(1)


@dataclass(frozen=True)
class SynthConfig(JobConfig):
    """``configs/synth.yaml``, typed."""
    ray: RayOptions
    progress: bool
    seed: int
    model: ModelOptions
    loras: tuple[LoraOptions, ...]
    generation: GenerationBlock
    prompts: PromptsOptions
    gender: GenderOptions
    select: SelectOptions
    face_swap: FaceSwapStage
    postprocess: PostprocessStage
    id_filter: IDFilterStage
    dedup: DedupOptions
    output: OutputOptions

    @cached_property
    def generate(self) -> GenerateStage:
        return generate_stage(self.model, self.generation, self.loras)

    def chain(self) -> list:
        """Every model stage in order (built once, with the config)."""
        return [self.generate, self.face_swap, self.postprocess, self.id_filter]

    def models(self) -> list[tuple[str, str, str]]:
        return stage_models(s for s in self.chain() if s.enabled)

    def needs(self) -> list:
        return [*(n for s in self.chain() if s.enabled for n in s.needs()), *gender_needs(self.gender)]

    def planner(self, prompts: list | None = None) -> Planner:
        """The planner (``prompts``: the bank already loaded, else read now)."""
        bank = prompts if prompts is not None else load_prompts(self.prompts_file)
        return Planner(bank, self.prompts, self.gender, self.seed)

    @property
    def prompts_file(self) -> Path:
        return packaged_path(self.prompts.file)


# -------------------------------------------------------------- selection ---
def select_sources(files: list[str], sel: SelectOptions, seed: int) -> pa.Array:
    """The ids of the SPSS records used as identity sources: a stable hash sample, at most
    ``per_identity`` per dataset identity and ``max_sources`` in all (lowest hash first)."""
    t = read_column(files, ["id", "identity"])
    ids, idents = t["id"].to_pylist(), t["identity"].to_pylist()
    ranked = sorted((derived_seed(seed, "select", i) / 0x7FFFFFFF, i, g) for i, g in zip(ids, idents))
    counts: dict[str, int] = {}
    out = []
    for r, i, g in ranked:
        if r >= sel.fraction and sel.fraction < 1.0:
            continue
        if sel.per_identity is not None and g is not None:
            if counts.get(g, 0) >= sel.per_identity:
                continue
            counts[g] = counts.get(g, 0) + 1
        out.append(i)
        if sel.max_sources is not None and len(out) >= sel.max_sources:
            break
    return pa.array(sorted(out), pa.string())


def expected_pairs(files: list[str], selected: pa.Array, cfg: SynthConfig) -> pa.Table | None:
    """(pair_id, source_id) of every pair the plan holds, when it can be known without models
    (no gender classifier)."""
    planner = cfg.planner()
    if planner.needs_model:
        return None
    t = read_column(files, ["id", "source", "identity", "gender"])
    t = t.filter(pc.is_in(t["id"], value_set=selected))
    jobs = planner.expand(t.to_pylist())
    return pa.table({"pair_id": pa.array([j["pair_id"] for j in jobs], pa.string()),
                     "source_id": pa.array([j["source_id"] for j in jobs], pa.string())})


def pending_work(selected: pa.Array, expected: pa.Table | None, done: pa.Array) -> tuple[pa.Array, pa.Array, int | None]:
    """(sources to plan, pair ids to skip among them, pairs left). With a known plan only the
    sources with a missing pair are read again, and only their own finished pairs are skipped."""
    if expected is None:
        return selected, done, None
    missing = expected.filter(pc.invert(pc.is_in(expected["pair_id"], value_set=done)))
    sources = pc.unique(missing["source_id"])
    theirs = expected.filter(pc.is_in(expected["source_id"], value_set=sources))
    skip = theirs.filter(pc.is_in(theirs["pair_id"], value_set=done))["pair_id"]
    return sources, skip.combine_chunks(), missing.num_rows


# ---------------------------------------------------------------- the job ---
class PlanActor:
    """``map_batches`` callable: SPSS rows of selected sources -> their pending jobs."""

    def __init__(self, planner: Planner, selected: pa.Array, done: pa.Array):
        self.planner = planner
        self.planner.setup()
        self.selected, self.done = selected, frozenset(done.to_pylist())

    def __call__(self, table: pa.Table) -> pa.Table:
        table = table.filter(pc.is_in(table["id"], value_set=self.selected))
        return pa.Table.from_pylist(self.planner.expand(table.to_pylist(), self.done), schema=SYNTH_ROW_SCHEMA)


def _plan(table: pa.Table, planner: Planner, selected: pa.Array, done: pa.Array) -> pa.Table:
    return PlanActor(planner, selected, done)(table)


def process(lay: Layout, files: list[str], cfg: SynthConfig, selected: pa.Array, done: pa.Array, log=print) -> None:
    import ray

    from pipelines.ray_stages import add_stage, plan_pools
    from pipelines.sink import RowSink

    planner = cfg.planner()  # the bank read once, handed to every planning task
    stages = plan_pools(cfg.chain(), extra=0.25 if planner.needs_model else 0.0, log=log)
    # light CPU requests for the glue: the model pools hold most of a small machine's slots
    fs, paths = arrow(files)
    ds = ray.data.read_parquet(paths, filesystem=fs, num_cpus=0.25).select_columns(SOURCE_COLUMNS)
    # a few sources per block: each expands into prompts x seeds jobs that carry its image
    ds = ds.repartition(target_num_rows_per_block=4)
    if planner.needs_model:  # a gender classifier: load it once
        ds = ds.map_batches(PlanActor, fn_constructor_args=(planner, selected, done), batch_format="pyarrow",
                            batch_size=4, num_cpus=0.25, compute=ray.data.ActorPoolStrategy(size=1))
    else:
        ds = ds.map_batches(_plan, fn_kwargs={"planner": planner, "selected": selected, "done": done},
                            batch_format="pyarrow", batch_size=4, num_cpus=0.25)
    for stage in stages:
        ds = add_stage(ds, stage, SYNTH_ROW_SCHEMA)
    ds.write_datasink(RowSink(lay.candidates, lay.parts_rejected, cfg.output.rows_per_file, cfg.output.rejected_images,
                              SPMS_SCHEMA, key="pair_id", image="target_image", lease=lay.lease),
                      ray_remote_args={"num_cpus": 0.25})


def check_synth(spss_dir, cfg: SynthConfig) -> bool:
    """Everything a synth run can be refused for, before it touches its output (the config was
    checked when it was parsed): the model folders, the prompt bank, and SPSS Parquet with rows and
    the columns synthesis reads."""
    cfg.model.check()
    load_prompts(cfg.prompts_file)
    if not check_inputs(input_files(spss_dir), SOURCE_COLUMNS, "infu synth"):
        raise ValueError(f"no identity sources: the Parquet in {spss_dir} holds no rows")
    return True


@job_run("synth", check_synth)
def run_synth(spss_dir, out, cfg: SynthConfig, *, checked, claim, ray_address: str | None = None,
              overwrite: bool = False, log=print) -> dict:
    t0 = time.time()
    files = input_files(spss_dir)
    lay = Layout(out)
    specs = [SourceSpec("spss", "input", str(as_path(spss_dir).resolve())),
             SourceSpec("model", "model", cfg.model.path.key),
             SourceSpec("prompts", "prompts", str(cfg.prompts_file.resolve()))]
    prepare_out(lay, claim, cfg, specs, overwrite, contents={"prompts": cfg.prompts_file})
    selected = select_sources(files, cfg.select, cfg.seed)
    expected = expected_pairs(files, selected, cfg)
    done = read_column(lay.written(), ["pair_id"], SPMS_SCHEMA)["pair_id"].combine_chunks()
    sources, skip, todo = pending_work(selected, expected, done)
    generated = 0
    if len(sources) and todo != 0:
        if lay.dedup.exists():
            lay.dedup.unlink()  # new candidates: earlier duplicate decisions are stale
        from pipelines.ray_runtime import init_ray

        init_ray(ray_address, cfg.ray, cfg.progress)
        log(f"synth: {len(sources)} identity sources to (re)visit, "
            f"{'pending pairs decided by the gender classifier' if todo is None else f'{todo} pairs to generate'}")
        with progress_lines("synth", todo, rows_added(lay.candidates, lay.parts_rejected), log):
            process(lay, files, cfg, sources, skip, log)
        generated = count_unaccounted(read_column(lay.written(), ["pair_id"], SPMS_SCHEMA)["pair_id"], done)
    dedup_and_finalize(lay, cfg.dedup, cfg.output.rejected_images, SPMS_SCHEMA, key="pair_id",
                       prefer=(("pixels", "descending"), ("id_similarity", "descending")), image="target_image")
    stats = synth_stats(lay, selected, None if expected is None else expected["pair_id"], cfg, time.time() - t0)
    stats["written_this_run"] = generated
    write_json(lay.out / "stats.json", stats)  # last, written whole: the file that says the run is done
    return stats


# ------------------------------------------------------------------ stats ---
def synth_stats(lay: Layout, selected: pa.Array, expected: pa.Array | None, cfg: SynthConfig, elapsed: float) -> dict:
    cols = ["pair_id", "source_id", "status", "reason", "gender_from", "id_similarity", "id_distance"]
    out = read_column(parquet_files(lay.kept, lay.rejected), cols, SPMS_SCHEMA)
    status, reasons = out["status"].to_pylist(), out["reason"].to_pylist()
    stages = cfg.chain()
    # every reason a stage that ran may give, counted or not: "extreme_pose 0" says the check ran
    by_reason = {r: 0 for st in stages if st.enabled for r in st.reasons}
    if cfg.dedup.enabled:
        by_reason["duplicate"] = 0
    for s, r in zip(status, reasons):
        if s != KEPT:
            by_reason[r] = by_reason.get(r, 0) + 1
    kept = out.filter(pc.equal(out["status"], KEPT))
    sources_missing = count_unaccounted(selected, out["source_id"])
    missing = count_unaccounted(expected, out["pair_id"]) if expected is not None else None
    unique = len(pc.unique(out["pair_id"]))
    return {
        "sources_selected": len(selected), "sources_unaccounted": sources_missing,
        "pairs_planned": None if expected is None else len(expected), "pairs": out.num_rows,
        KEPT: status.count(KEPT), REJECTED: status.count(REJECTED), QUARANTINED: status.count(QUARANTINED),
        "unaccounted": missing, "duplicate_ids": out.num_rows - unique,
        "adds_up": sources_missing == 0 and unique == out.num_rows and (missing in (None, 0))
        and (expected is None or out.num_rows == len(expected)),
        "by_reason": dict(sorted(by_reason.items())), "gender_from_pairs": _counts(out["gender_from"]),
        "kept_id_similarity": _summary(kept["id_similarity"]), "kept_id_distance": _summary(kept["id_distance"]),
        "stages": {st.name: st.report() for st in stages}, "elapsed_s": round(elapsed, 2),
    }


def _counts(col) -> dict:
    vals = [str(v) for v in col.to_pylist()]
    return {k: vals.count(k) for k in sorted(set(vals))}


def _summary(col) -> dict | None:
    import numpy as np

    v = np.asarray([x for x in col.to_pylist() if x is not None], np.float64)
    if not len(v):
        return None
    return {"mean": round(float(v.mean()), 4), "p10": round(float(np.percentile(v, 10)), 4),
            "p50": round(float(np.median(v)), 4), "p90": round(float(np.percentile(v, 90)), 4)}
