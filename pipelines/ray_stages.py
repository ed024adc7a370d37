"""The one adapter from a curation Stage to Ray Data.

Stateless stages run as Ray tasks; stages that hold a model run as an actor pool
(one model load per actor) sized by their ``resources``.
"""
from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import ray

from curation.records import to_table
from curation.engine import Stage, run_stage, shed
from infu_model.runtime import is_cuda

READS = 1.0  # CPUs a job's read and write tasks keep beside a pool that fills the cluster (file listing takes one)


def table_to_rows(table: pa.Table, schema: pa.Schema) -> list[dict]:
    """Rows with every field of ``schema`` (manifest tables lack most of them)."""
    missing = [f for f in schema if f.name not in table.column_names]
    rows = table.to_pylist()
    for r in rows:
        for f in missing:
            r[f.name] = None
    return rows


def apply_stage(table: pa.Table, stage: Stage, schema: pa.Schema) -> pa.Table:
    """One operator of the chain Ray runs: a row the stage let go sheds its hand-over columns here."""
    rows = run_stage(stage, table_to_rows(table, schema))
    shed(rows)
    return to_table(rows, schema)


class StageActor:
    """Callable class for ``map_batches``: sets up the stage (loads its model) once."""

    def __init__(self, stage: Stage, schema: pa.Schema):
        self.stage, self.schema = stage, schema
        self.stage.ensure_setup()

    def __call__(self, table: pa.Table) -> pa.Table:
        return apply_stage(table, self.stage, self.schema)


def _stateless(table: pa.Table, stage: Stage, schema: pa.Schema) -> pa.Table:
    return apply_stage(table, stage, schema)


def add_stage(ds: ray.data.Dataset, stage: Stage, schema: pa.Schema) -> ray.data.Dataset:
    """``stage`` (built in the driver, its pool resolved) as a Ray Data operator over rows of ``schema``
    (the job's, built from its stages in the driver): the workers get the built stage (they need
    neither configs/ nor a second check); a stateful one loads its model once per actor."""
    res = stage.resources
    common = dict(batch_format="pyarrow", batch_size=int(res.batch_size), num_cpus=res.num_cpus)
    if res.gpus:
        common["num_gpus"] = res.gpus
    if not stage.stateful:
        return ds.map_batches(_stateless, fn_kwargs={"stage": stage, "schema": schema}, **common)
    # a CPU actor works one batch at a time: a second one queued on it waits there, and at the end of
    # a job it waited while the pool's other actors sat idle (a whole batch's time). A GPU actor
    # keeps Ray's queue of two, which overlaps moving a batch in with computing the last.
    queue = None if res.gpus else 1
    return ds.map_batches(StageActor, fn_constructor_args=(stage, schema), **common,
                          compute=ray.data.ActorPoolStrategy(size=res.actors, max_tasks_in_flight_per_actor=queue))


def resolve_gpus(stages: list[Stage], gpus: float) -> list[Stage]:
    """Fill the ``resources`` a config leaves null from the cluster: on a cluster with ``gpus``, an
    actor pool whose model runs on cuda gets the stage's ``gpu_share`` of a GPU per actor and as
    many actors as its part of the GPUs holds (the GPUs are split evenly between such pools);
    every other pool, and every pool on a cluster without GPUs, asks for none (a cuda model then
    falls back to the CPU, as the configs say). Values the config sets are kept."""
    on_gpu = [s for s in stages if gpus and s.stateful and s.enabled and is_cuda(s.device)]
    out = []
    for s in stages:
        res = s.resources
        if s in on_gpu:
            share = s.gpu_share if res.num_gpus is None else res.num_gpus
            actors = res.concurrency if res.concurrency is not None or not share else \
                max(1, int(gpus / len(on_gpu) / share + 1e-9))
            res = replace(res, num_gpus=share, concurrency=actors)
        elif res.num_gpus is None:
            res = replace(res, num_gpus=0.0)
        out.append(s.with_(resources=res))
    return out


def resolve_cpus(stages: list[Stage], cpus: float, reads: float) -> list[Stage]:
    """An unsized CPU pool of a stage that ``fills_cpus`` (a fused chain) gets an actor per CPU the
    read and write tasks (``reads``) leave, at most one per CPU."""
    out = []
    for s in stages:
        res = s.resources
        if s.fills_cpus and res.concurrency is None and not res.gpus:
            res = replace(res, concurrency=max(1, min(int(cpus), int((cpus - reads) / res.num_cpus + 1e-9))))
        out.append(s.with_(resources=res))
    return out


def plan_pools(stages: list[Stage], *, reads: float = 1.0, extra: float = 0.0, log=print) -> list[Stage]:
    """The enabled stages with their pools resolved against the running cluster (``resolve_gpus``,
    ``resolve_cpus``), the CPU budget checked, and the pool sizes printed. Jobs add the stages it returns."""
    cluster = ray.cluster_resources()
    resolved = resolve_gpus([s for s in stages if s.enabled], cluster.get("GPU", 0.0))
    resolved = resolve_cpus(resolved, cluster.get("CPU", 0.0), reads)
    pools = [s for s in resolved if s.stateful]
    check_cpu_budget(pools, extra, reads)
    if pools:
        log("actor pools: " + ", ".join(
            f"{p.label} {p.resources.actors} x ({p.resources.num_cpus:g} CPU"
            + (f", {p.resources.gpus:g} GPU" if p.resources.gpus else "") + ")" for p in pools))
    return resolved


def check_cpu_budget(pools: list[Stage], extra: float = 0.0, reads: float = 1.0) -> None:
    """Refuse a job whose actor ``pools`` leave Ray Data too few CPUs for its read tasks (``reads``
    CPUs each): instead of failing, such a job would wait forever. ``extra``: other fixed asks."""
    need = extra + sum(p.resources.num_cpus * p.resources.actors for p in pools)
    total = ray.cluster_resources().get("CPU", 0.0)
    if need + reads > total:
        asks = ", ".join(f"{p.label} {p.resources.num_cpus:g} x {p.resources.actors}" for p in pools)
        raise ValueError(f"the actor pools ({asks}{f', other {extra:g}' if extra else ''}) ask for {need:g} of the "
                         f"cluster's {total:g} CPUs and the read tasks need {reads:g} more: the job would wait "
                         "forever. Lower the stages' resources.num_cpus or concurrency.")
