"""`infu synth`: SPSS identities in, ID-filtered SPMS pairs out.

    SPSS kept/*.parquet -> select sources -> plan (prompts x seeds per source, gender-paired)
      -> generate (InfU actor pool, LoRAs) -> face swap -> post-process -> ID filter
      -> OUT/_work/candidates + OUT/rejected -> near-duplicate targets -> OUT/kept

Every planned pair ends in exactly one of OUT/kept/ or OUT/rejected/ (rejected or
quarantined, with its reason and scores); OUT/stats.json adds them up. A rerun on
the same OUT resumes: planned pairs already written are never generated again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curation.records import KEPT, QUARANTINED, REJECTED
from pipelines.config import packaged_path
from pipelines.job import (Layout, SourceSpec, check_inputs, check_stages, count_unaccounted, dedup_and_finalize,
                           input_files, parquet_files, prepare_out, read_column)
from synth.face_swap import FaceSwapStage
from synth.generate import GenerateStage, check_cfg, generate_cfg
from synth.id_filter import IDFilterStage
from synth.plan import Planner, needs_model
from synth.prompts import load_prompts
from synth.postprocess import PostprocessStage
from synth.records import SPMS_SCHEMA, SYNTH_ROW_SCHEMA, derived_seed

SOURCE_COLUMNS = ["id", "source", "identity", "gender", "image", "bbox", "kps", "id_embedding", "id_backend"]


# ------------------------------------------------------------ the configs ---
def planner_cfg(cfg: dict) -> dict:
    p = cfg.get("prompts") or {}
    return {"prompts_file": str(packaged_path(p["file"])), "prompts_per_source": p.get("per_source"),
            "seeds_per_prompt": p.get("seeds_per_prompt", 1), "seed": cfg.get("seed", 0), "gender": cfg.get("gender")}


def chain(cfg: dict) -> list[tuple[type, dict]]:
    """Every model stage in order, each with its config."""
    return [(GenerateStage, generate_cfg(cfg)), (FaceSwapStage, cfg.get("face_swap") or {}),
            (PostprocessStage, cfg.get("postprocess") or {}), (IDFilterStage, cfg.get("id_filter") or {})]


# -------------------------------------------------------------- selection ---
def select_sources(files: list[str], sel: dict, seed: int) -> pa.Array:
    """The ids of the SPSS records used as identity sources: a stable hash sample, at most
    ``per_identity`` per dataset identity and ``max_sources`` in all (lowest hash first)."""
    t = read_column(files, ["id", "identity"])
    ids, idents = t["id"].to_pylist(), t["identity"].to_pylist()
    frac = float(sel.get("fraction", 1.0))
    ranked = sorted((derived_seed(seed, "select", i) / 0x7FFFFFFF, i, g) for i, g in zip(ids, idents))
    per, cap = sel.get("per_identity"), sel.get("max_sources")
    counts: dict[str, int] = {}
    out = []
    for r, i, g in ranked:
        if r >= frac and frac < 1.0:
            continue
        if per is not None and g is not None:
            if counts.get(g, 0) >= int(per):
                continue
            counts[g] = counts.get(g, 0) + 1
        out.append(i)
        if cap is not None and len(out) >= int(cap):
            break
    return pa.array(sorted(out), pa.string())


def expected_pairs(files: list[str], selected: pa.Array, cfg: dict) -> pa.Table | None:
    """(pair_id, source_id) of every pair the plan holds, when it can be known without models
    (no gender classifier)."""
    if needs_model(cfg):
        return None
    planner = Planner(planner_cfg(cfg))
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

    def __init__(self, cfg: dict, prompts: list, selected: pa.Array, done: pa.Array):
        self.planner = Planner(cfg, prompts)
        self.planner.setup()
        self.selected, self.done = selected, frozenset(done.to_pylist())

    def __call__(self, table: pa.Table) -> pa.Table:
        table = table.filter(pc.is_in(table["id"], value_set=self.selected))
        return pa.Table.from_pylist(self.planner.expand(table.to_pylist(), self.done), schema=SYNTH_ROW_SCHEMA)


def _plan(table: pa.Table, cfg: dict, prompts: list, selected: pa.Array, done: pa.Array) -> pa.Table:
    return PlanActor(cfg, prompts, selected, done)(table)


def process(lay: Layout, files: list[str], cfg: dict, selected: pa.Array, done: pa.Array, log=print) -> None:
    import ray

    from pipelines.ray_stages import add_stage, plan_pools
    from pipelines.sink import RowSink

    pcfg = planner_cfg(cfg)
    prompts = load_prompts(pcfg["prompts_file"])  # read once, handed to every planning task
    stages = plan_pools(chain(cfg), extra=0.25 if needs_model(pcfg) else 0.0, log=log)
    # light CPU requests for the glue: the model pools hold most of a small machine's slots
    ds = ray.data.read_parquet(files, num_cpus=0.25).select_columns(SOURCE_COLUMNS)
    # a few sources per block: each expands into prompts x seeds jobs that carry its image
    ds = ds.repartition(target_num_rows_per_block=4)
    if needs_model(pcfg):  # a gender classifier: load it once
        ds = ds.map_batches(PlanActor, fn_constructor_args=(pcfg, prompts, selected, done), batch_format="pyarrow",
                            batch_size=4, num_cpus=0.25, compute=ray.data.ActorPoolStrategy(size=1))
    else:
        ds = ds.map_batches(_plan, fn_kwargs={"cfg": pcfg, "prompts": prompts, "selected": selected, "done": done},
                            batch_format="pyarrow", batch_size=4, num_cpus=0.25)
    for cls, c in stages:
        ds = add_stage(ds, cls, c)
    out = cfg.get("output") or {}
    ds.write_datasink(RowSink(lay.candidates, lay.rejected, int(out["rows_per_file"]),
                                   bool(out.get("rejected_images", True)), schema=SPMS_SCHEMA, key="pair_id",
                                   image="target_image"), ray_remote_args={"num_cpus": 0.25})


def check_synth(spss_dir, cfg: dict) -> None:
    """Everything a synth run can be refused for, before it touches its output: the stages' options,
    the model settings, the prompt bank, and SPSS Parquet with rows and the columns synthesis reads."""
    check_stages(chain(cfg))
    check_cfg(cfg)
    load_prompts(planner_cfg(cfg)["prompts_file"])
    if not check_inputs(input_files(spss_dir), SOURCE_COLUMNS, "infu synth"):
        raise ValueError(f"no identity sources: the Parquet in {spss_dir} holds no rows")


def run_synth(spss_dir, out, cfg: dict, *, ray_address: str | None = None, overwrite: bool = False,
              log=print) -> dict:
    t0 = time.time()
    check_synth(spss_dir, cfg)
    files = input_files(spss_dir)
    lay = Layout(Path(out))
    specs = [SourceSpec("spss", "input", str(Path(spss_dir).resolve())),
             SourceSpec("model", "model", str(Path(cfg["model"]["path"]).expanduser().resolve())),
             SourceSpec("prompts", "prompts", str(packaged_path(cfg["prompts"]["file"]).resolve()))]
    prepare_out(lay, cfg, specs, overwrite, "synth")
    selected = select_sources(files, cfg.get("select") or {}, int(cfg.get("seed", 0)))
    expected = expected_pairs(files, selected, cfg)
    done = read_column(parquet_files(lay.candidates, lay.kept, lay.rejected), ["pair_id"], SPMS_SCHEMA)["pair_id"]
    done = done.combine_chunks()
    sources, skip, todo = pending_work(selected, expected, done)
    generated = 0
    if len(sources) and todo != 0:
        if lay.dedup.exists():
            lay.dedup.unlink()  # new candidates: earlier duplicate decisions are stale
        from pipelines.ray_runtime import init_ray

        init_ray(ray_address, cfg)
        log(f"synth: {len(sources)} identity sources to (re)visit, "
            f"{'pending pairs decided by the gender classifier' if todo is None else f'{todo} pairs to generate'}")
        process(lay, files, cfg, sources, skip, log)
        generated = count_unaccounted(
            read_column(parquet_files(lay.candidates, lay.kept, lay.rejected), ["pair_id"], SPMS_SCHEMA)["pair_id"], done)
    out_cfg = cfg.get("output") or {}
    dedup_and_finalize(lay, cfg.get("dedup") or {}, bool(out_cfg.get("rejected_images", True)), SPMS_SCHEMA,
                       key="pair_id", rank="id_similarity", image="target_image")
    stats = synth_stats(lay, selected, None if expected is None else expected["pair_id"], cfg, time.time() - t0)
    stats["written_this_run"] = generated
    (lay.out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


# ------------------------------------------------------------------ stats ---
def synth_stats(lay: Layout, selected: pa.Array, expected: pa.Array | None, cfg: dict, elapsed: float) -> dict:
    cols = ["pair_id", "source_id", "status", "reason", "gender_from", "id_similarity", "id_distance"]
    out = read_column(parquet_files(lay.kept, lay.rejected), cols, SPMS_SCHEMA)
    status, reasons = out["status"].to_pylist(), out["reason"].to_pylist()
    stages = [cls(c) for cls, c in chain(cfg)]
    # every reason a stage that ran may give, counted or not: "extreme_pose 0" says the check ran
    by_reason = {r: 0 for st in stages if st.enabled for r in st.reasons}
    if cfg["dedup"]["enabled"]:
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
