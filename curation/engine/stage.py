"""The stage contract: what every row stage of every job (curation's filters, synthesis, scoring) follows.

A stage is a small class: it declares its resources, the columns it reads and the columns it adds,
loads its model once in ``setup()`` and turns a batch of row dicts into the same rows, each either
still alive (``status == "pending"``) with its columns filled in, or rejected with a reason, or
quarantined with the error. Rows that arrive already rejected pass through untouched, so every
input reaches the sink and is counted.

The declarations are checked: ``chain_schema`` builds the rows' schema from the stages in order and
refuses, when the job is built, a stage that reads a column nothing before it writes; ``run_stage``
refuses a stage that fills a column it did not declare (it would be lost on write).

Only ``pipelines/`` knows Ray: it wraps a stage into a Ray Data actor pool (or
task pool when ``stateful`` is False) with ``resources``. Tests call
``run_stage`` directly. A stage reads no configuration file: its job's typed
config builds it (``from_block``) from the job's YAML, where every default lives.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from curation.engine.options import ConfigError, between, parse, plain
from curation.engine.rows import STATUS_COLUMNS, alive, quarantine, reject, shed, transient
from infu_model.runtime import is_cuda


@dataclass(frozen=True)
class Resources:
    """A stage's Ray pool: CPUs and GPUs per task or actor, rows per batch, actors in the pool.
    ``num_gpus`` / ``concurrency`` null: resolved from the cluster when the job starts
    (pipelines/ray_stages.py), else no GPU and one actor."""
    num_cpus: float = between(0)
    batch_size: int = between(1)
    num_gpus: float | None = between(0, default=None)
    concurrency: int | None = between(1, default=None)

    @property
    def gpus(self) -> float:
        return self.num_gpus or 0.0

    @property
    def actors(self) -> int:
        return self.concurrency or 1


@dataclass(frozen=True)
class NoOptions:
    """The options of a stage that takes none."""


class Stage:
    """Base class. Subclasses set ``name``, ``reasons`` and ``Options`` and implement ``process``.

    A stage is built once, by its job's typed config (``from_block``: its block of the job's YAML,
    laid over the packaged defaults there, parsed into ``Options`` and ``Resources``), and handed
    as it is to the Ray pool that runs it; ``with_`` gives a copy with other options or resources."""

    name: ClassVar[str] = "stage"
    reasons: ClassVar[tuple[str, ...]] = ()   # reject codes this stage may emit
    reads: ClassVar[tuple[str, ...]] = ()      # columns it reads, which the input or an earlier stage holds
    writes: ClassVar[tuple[pa.Field, ...]] = ()  # columns it fills (a ``_`` name hands data to later stages)
    scores: ClassVar[tuple[str, ...]] = ()     # of those, what explains its rejections (report, stats)
    stateful: ClassVar[bool] = True            # holds a model: run as an actor pool
    gpu_share: ClassVar[float] = 0.25          # of a GPU per actor when its model runs on cuda (small models share)
    fills_cpus: ClassVar[bool] = False         # a CPU pool left unsized gets an actor per CPU the cluster spares
    Options: ClassVar[type] = NoOptions        # its typed options (a frozen dataclass, curation/engine/options.py)

    def __init__(self, opts=None, resources: Resources | None = None, label: str | None = None):
        """``opts`` (required when the stage has options) and ``resources`` as the job's config built them; a
        stage used outside a job (a plain loop, a test) runs with one CPU and batches of 16."""
        if opts is None and dataclasses.fields(self.Options):
            raise TypeError(f"{type(self).__name__} needs its options ({self.Options.__name__})")
        opts = self.Options() if opts is None else opts
        if not isinstance(opts, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, not {type(opts).__name__}")
        self.opts, self.resources, self._label = opts, resources or Resources(num_cpus=1, batch_size=16), label
        self._ready = False

    @property
    def label(self) -> str:
        """What the job calls it: its block's ``name`` (a captioner's caption source), else the stage's."""
        return self._label or self.name

    @classmethod
    def from_block(cls, block: dict, where: str) -> "Stage":
        """The stage of a config block (``name`` and ``resources`` beside its options)."""
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: expected a mapping, got {block!r}")
        own = {k: v for k, v in block.items() if k not in ("name", "resources")}
        if "resources" not in block:
            raise ConfigError(f"{where}: resources is missing")
        return cls(parse(cls.Options, own, where), parse(Resources, block["resources"], f"{where}.resources"),
                   block.get("name"))

    def block(self) -> dict:
        """The stage as its config block again (for config.yaml and the run's fingerprint)."""
        named = {"name": self._label} if self._label else {}
        return {**named, **plain(self.opts), "resources": plain(self.resources)}

    def with_(self, *, opts=None, resources: Resources | None = None) -> "Stage":
        """A copy with other options (e.g. what the job sets) or its pool resolved against the cluster."""
        return type(self)(opts or self.opts, resources or self.resources, self._label)

    @property
    def enabled(self) -> bool:
        """False when the config leaves the stage nothing to run with (it is then skipped)."""
        return True

    @property
    def device(self) -> str:
        """Where the stage's model runs (``cuda`` asks the cluster for a share of a GPU per actor)."""
        return str(getattr(self.opts, "device", None) or "cpu")

    def models(self) -> list[tuple[str, str, str]]:
        """(model, device, runtime) for each model the stage loads: ``infu doctor`` and the line a job
        prints at start say where each will run (infu_model.runtime.placement)."""
        return [(self.label, self.device, "torch")] if self.stateful and self.enabled else []

    def needs(self) -> list:
        """The models (infu_model.hub.Need) the stage loads, which the job fetches in its driver before
        any work; its actors then read them from the cache."""
        return []

    def setup(self) -> None:
        """Load models. Called once per actor, before the first batch."""

    def ensure_setup(self) -> None:
        """``setup()`` once, whoever needs it first: the Ray actor, or ``run_stage`` in a plain loop."""
        if not self._ready:
            self.setup()
            self._ready = True

    def process(self, rows: list[dict]) -> None:
        """Fill fields of (or reject) each alive row in place."""
        raise NotImplementedError

    def report(self) -> dict:
        """What the summary says about this stage: did it run, with what backend."""
        return {"ran": True}


class Chain(Stage):
    """Stages run one after another in one process (a Ray actor runs them all): what one stage hands
    the next (the decoded analysis image) never leaves the process. Each keeps its own accounting:
    a row a stage rejects or quarantines skips the ones after it."""

    name = "chain"
    fills_cpus = True

    def __init__(self, stages: list[Stage], resources: Resources | None = None):
        super().__init__(None, resources)
        self.stages = list(stages)
        self.reasons = tuple(r for s in self.stages for r in (*s.reasons, f"{s.name}_error"))
        # as one stage: what its first stages need from outside, and everything its stages fill
        self.writes = tuple({f.name: f for s in self.stages for f in s.writes}.values())
        self.reads = tuple(dict.fromkeys(c for i, s in enumerate(self.stages) for c in s.reads
                                         if c not in {f.name for t in self.stages[:i] for f in t.writes}))
        self.scores = tuple(dict.fromkeys(c for s in self.stages for c in s.scores))

    @property
    def label(self) -> str:
        return "+".join(s.label for s in self.stages)

    @property
    def device(self) -> str:
        return next((s.device for s in self.stages if is_cuda(s.device)), "cpu")

    def with_(self, *, opts=None, resources: Resources | None = None) -> "Chain":
        return Chain(self.stages, resources or self.resources)

    def models(self) -> list[tuple[str, str, str]]:
        return [m for s in self.stages for m in s.models()]

    def needs(self) -> list:
        return [n for s in self.stages for n in s.needs()]

    def setup(self) -> None:
        for s in self.stages:
            s.ensure_setup()

    def process(self, rows: list[dict]) -> None:
        run_chain(self.stages, rows)

    def report(self) -> dict:
        return {s.name: s.report() for s in self.stages}


def score_and_threshold(rows: list[dict], scores, field: str, threshold: float, reason: str) -> None:
    """Store each row's score in ``field``; reject with ``reason`` when it reaches ``threshold``."""
    for row, s in zip(rows, scores):
        row[field] = float(s)
        if s >= threshold:
            reject(row, reason)


class UndeclaredReason(RuntimeError):
    """A stage rejected a row for a reason missing from its ``reasons``: a bug in the stage."""


class UndeclaredColumn(RuntimeError):
    """A stage filled a column missing from its ``writes``: a bug in the stage (the column would be
    dropped when the rows are written)."""


class ChainError(ConfigError):
    """Stages chained so that one reads a column nothing before it writes, or two write one column
    with different types: refused when the job is built."""


def chain_schema(stages: list[Stage], given: list[pa.Field], last: list[pa.Field] = ()) -> pa.Schema:
    """The rows' schema when ``stages`` run in order over rows that hold the ``given`` columns: those,
    each column a stage adds (in order), then ``last`` (the status columns)."""
    fields = {f.name: f for f in [*given, *last]}
    added: dict[str, pa.Field] = {}
    for s in stages:
        missing = [c for c in s.reads if c not in fields and c not in added]
        if missing:
            raise ChainError(f"stage {s.name!r} reads {', '.join(missing)}, which nothing before it writes "
                             f"(the input holds {', '.join(f.name for f in given)}; earlier stages add "
                             f"{', '.join(added) or 'nothing'})")
        for f in s.writes:
            have = fields.get(f.name) or added.get(f.name)
            if have is not None and not have.type.equals(f.type):
                raise ChainError(f"stage {s.name!r} writes {f.name} as {f.type}, which is already {have.type}")
            if have is None:
                added[f.name] = f
    return pa.schema([*given, *added.values(), *last])


def run_stage(stage: Stage, rows: list[dict]) -> list[dict]:
    """Apply ``stage`` to the alive rows of a batch; one bad row never sinks the batch.

    The batch goes through ``process`` whole (models like batches); if that raises,
    each row is retried alone and only the rows that still raise are quarantined.
    """
    live = [r for r in rows if alive(r)]
    if not live:
        return rows
    stage.ensure_setup()
    had = [set(r) for r in live]
    try:
        stage.process(live)
    except Exception:
        for row in live:
            if not alive(row):
                continue
            try:
                stage.process([row])
            except Exception as e:  # noqa: BLE001 - the row is quarantined with the error
                quarantine(row, f"{stage.name}_error", e)
    undeclared = {r["reason"] for r in live if not alive(r)} - {*stage.reasons, f"{stage.name}_error"}
    if undeclared:  # a stage's reasons are its contract with the stats and the report
        raise UndeclaredReason(f"stage {stage.name!r} gave reasons {sorted(undeclared)} it does not declare "
                               f"(reasons = {stage.reasons})")
    declared = {f.name for f in stage.writes}
    new = {k for row, keys in zip(live, had) for k in row.keys() - keys} - declared - set(STATUS_COLUMNS)
    if new:
        raise UndeclaredColumn(f"stage {stage.name!r} filled {sorted(new)}, which it does not declare "
                               f"(writes = {sorted(declared)}): they would be lost on write")
    return rows


def run_chain(stages: list[Stage], rows: list[dict]) -> list[dict]:
    """Apply ``stages`` one after another. A row that leaves (rejected, quarantined) sheds its
    hand-over columns at once; what the stages handed each other stays inside the chain."""
    handed = []
    for s in stages:
        run_stage(s, rows)
        shed(rows)
        handed += [f.name for f in s.writes if transient(f.name)]
    for row in rows:
        for k in handed:
            row[k] = None
    return rows
