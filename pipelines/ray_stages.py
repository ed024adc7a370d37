"""The one adapter from a curation Stage to Ray Data.

Stateless stages run as Ray tasks; stages that hold a model run as an actor pool
(one model load per actor) sized by their ``resources``.
"""
from __future__ import annotations

import pyarrow as pa
import ray

from curation.records import ROW_SCHEMA, to_table
from curation.stage import Stage, run_stage


def table_to_rows(table: pa.Table, schema: pa.Schema = ROW_SCHEMA) -> list[dict]:
    """Rows with every field of ``schema`` (manifest tables lack most of them)."""
    missing = [f for f in schema if f.name not in table.column_names]
    rows = table.to_pylist()
    for r in rows:
        for f in missing:
            r[f.name] = None
    return rows


def apply_stage(table: pa.Table, stage: Stage) -> pa.Table:
    return to_table(run_stage(stage, table_to_rows(table, stage.schema)), stage.schema)


class StageActor:
    """Callable class for ``map_batches``: sets up the stage (loads its model) once."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.stage.ensure_setup()

    def __call__(self, table: pa.Table) -> pa.Table:
        return apply_stage(table, self.stage)


def _stateless(table: pa.Table, stage: Stage) -> pa.Table:
    return apply_stage(table, stage)


def add_stage(ds: ray.data.Dataset, stage_cls: type[Stage], cfg: dict) -> ray.data.Dataset:
    # built here, in the driver, with its options checked against the packaged defaults; the workers
    # get the built stage (they need neither configs/ nor a second check)
    stage = stage_cls(cfg)
    res = stage.resources
    common = dict(batch_format="pyarrow", batch_size=int(res.batch_size), num_cpus=res.num_cpus)
    if res.num_gpus:
        common["num_gpus"] = res.num_gpus
    if not stage_cls.stateful:
        return ds.map_batches(_stateless, fn_kwargs={"stage": stage}, **common)
    return ds.map_batches(StageActor, fn_constructor_args=(stage,),
                          compute=ray.data.ActorPoolStrategy(size=int(res.concurrency)), **common)


def resolve_gpus(stages: list[tuple[type[Stage], dict]], gpus: float) -> list[tuple[type[Stage], dict]]:
    """Fill the ``resources`` a config leaves null from the cluster: on a cluster with ``gpus``, an
    actor pool whose model runs on cuda gets the stage's ``gpu_share`` of a GPU per actor and as
    many actors as its part of the GPUs holds (the GPUs are split evenly between such pools);
    every other pool, and every pool on a cluster without GPUs, asks for none (a cuda model then
    falls back to the CPU, as the configs say). Values the config sets are kept."""
    on_gpu = [i for i, (cls, c) in enumerate(stages)
              if gpus and cls.stateful and cls(c).enabled and cls(c).device.startswith("cuda")]
    out = []
    for i, (cls, c) in enumerate(stages):
        res = dict(c.get("resources") or {})
        if i in on_gpu:
            if res.get("num_gpus") is None:
                res["num_gpus"] = cls.gpu_share
            if res.get("concurrency") is None and res["num_gpus"]:
                res["concurrency"] = max(1, int(gpus / len(on_gpu) / res["num_gpus"] + 1e-9))
        elif res.get("num_gpus") is None:
            res["num_gpus"] = 0
        out.append((cls, {**c, "resources": res}))
    return out


def plan_pools(stages: list[tuple[type[Stage], dict]], *, reads: float = 1.0, extra: float = 0.0,
               log=print) -> list[tuple[type[Stage], dict]]:
    """The enabled stages with their pools resolved against the running cluster (``resolve_gpus``),
    the CPU budget checked, and the pool sizes printed. Jobs add the stages it returns."""
    enabled = [(cls, c) for cls, c in stages if cls(c).enabled]
    resolved = resolve_gpus(enabled, ray.cluster_resources().get("GPU", 0.0))
    pools = [cls(c) for cls, c in resolved if cls.stateful]
    check_cpu_budget(pools, extra, reads)
    if pools:
        log("actor pools: " + ", ".join(
            f"{p.cfg.get('name', p.name)} {p.resources.concurrency} x ({p.resources.num_cpus:g} CPU"
            + (f", {p.resources.num_gpus:g} GPU" if p.resources.num_gpus else "") + ")" for p in pools))
    return resolved


def check_cpu_budget(pools: list[Stage], extra: float = 0.0, reads: float = 1.0) -> None:
    """Refuse a job whose actor ``pools`` leave Ray Data too few CPUs for its read tasks (``reads``
    CPUs each): instead of failing, such a job would wait forever. ``extra``: other fixed asks."""
    need = extra + sum(p.resources.num_cpus * p.resources.concurrency for p in pools)
    total = ray.cluster_resources().get("CPU", 0.0)
    if need + reads > total:
        asks = ", ".join(f"{p.cfg.get('name', p.name)} {p.resources.num_cpus:g} x {p.resources.concurrency}"
                         for p in pools)
        raise ValueError(f"the actor pools ({asks}{f', other {extra:g}' if extra else ''}) ask for {need:g} of the "
                         f"cluster's {total:g} CPUs and the read tasks need {reads:g} more: the job would wait "
                         "forever. Lower the stages' resources.num_cpus or concurrency.")
