"""The stage contract every curation step follows.

A stage is a small class: it declares its resources, loads its model once in
``setup()`` and turns a batch of row dicts into the same rows, each either
still alive (``status == "pending"``) with new fields filled in, or rejected with
a reason, or quarantined with the error. Rows that arrive already rejected pass
through untouched, so every input reaches the sink and is counted.

Only ``pipelines/`` knows Ray: it wraps a stage into a Ray Data actor pool (or
task pool when ``stateful`` is False) with ``resources``. Tests call
``run_stage`` directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from curation.options import merge, named_block, packaged, parse
from curation.records import ROW_SCHEMA, alive, quarantine, reject


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 16
    concurrency: int = 1  # actors in the pool (stateful stages)

    @classmethod
    def from_config(cls, cfg: dict | None, **defaults) -> "Resources":
        """``null`` in the config leaves the default (pipelines/ray_stages.py resolves GPU pools first);
        a key that is not a resource is an error, not a setting silently dropped."""
        unknown = sorted(set(cfg or {}) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"resources: unknown key(s) {unknown}; allowed: {', '.join(cls.__dataclass_fields__)}")
        given = {k: v for k, v in (cfg or {}).items() if v is not None}
        return cls(**{**defaults, **given})


class Stage:
    """Base class. Subclasses set ``name`` and ``reasons`` and implement ``process``."""

    name: ClassVar[str] = "stage"
    reasons: ClassVar[tuple[str, ...]] = ()   # reject codes this stage may emit
    stateful: ClassVar[bool] = True            # holds a model: run as an actor pool
    default_resources: ClassVar[dict] = {}
    schema: ClassVar[pa.Schema] = ROW_SCHEMA   # the rows it reads and writes (SPMS stages have their own)
    gpu_share: ClassVar[float] = 0.25          # of a GPU per actor when its model runs on cuda (small models share)
    Options: ClassVar[type | None] = None      # its typed options (a dataclass, curation/options.py)
    defaults_in: ClassVar[tuple[str, str]] = ()  # (config, key) holding its defaults; a list: the block of its name

    def __init__(self, cfg: dict | None = None):
        """``cfg`` is laid over the stage's packaged defaults, then checked against ``Options``
        (``self.opts``); an unknown key, a wrong kind or an out-of-range value raises ConfigError."""
        given = dict(cfg or {})
        self.cfg = merge(self.defaults(given), given)
        self.resources = Resources.from_config(self.cfg.get("resources"), **self.default_resources)
        if self.Options is not None:
            own = {k: v for k, v in self.cfg.items() if k not in ("name", "resources")}
            self.opts = parse(self.Options, own, f"{' '.join(self.defaults_in) or 'stage'} ({self.name})")
        self._ready = False

    @classmethod
    def defaults(cls, cfg: dict) -> dict:
        """The stage's block in the packaged YAML (``defaults_in``): the one place its default values live."""
        if not cls.defaults_in:
            return {}
        config, key = cls.defaults_in
        block = packaged(config).get(key)
        return named_block(block, "name", cls.name) if isinstance(block, list) else dict(block or {})

    @property
    def enabled(self) -> bool:
        """False when the config leaves the stage nothing to run with (it is then skipped)."""
        return True

    @property
    def device(self) -> str:
        """Where the stage's model runs (``cuda`` asks the cluster for a share of a GPU per actor)."""
        return str(self.cfg.get("device") or "cpu")

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


def score_and_threshold(rows: list[dict], scores, field: str, threshold: float, reason: str) -> None:
    """Store each row's score in ``field``; reject with ``reason`` when it reaches ``threshold``."""
    for row, s in zip(rows, scores):
        row[field] = float(s)
        if s >= threshold:
            reject(row, reason)


class UndeclaredReason(RuntimeError):
    """A stage rejected a row for a reason missing from its ``reasons``: a bug in the stage."""


def run_stage(stage: Stage, rows: list[dict]) -> list[dict]:
    """Apply ``stage`` to the alive rows of a batch; one bad row never sinks the batch.

    The batch goes through ``process`` whole (models like batches); if that raises,
    each row is retried alone and only the rows that still raise are quarantined.
    """
    live = [r for r in rows if alive(r)]
    if not live:
        return rows
    stage.ensure_setup()
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
    return rows
