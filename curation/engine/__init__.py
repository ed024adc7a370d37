"""The row-stage engine every job's stages run on: typed options, the stage contract and row status.

It knows no domain (curation's filters, synthesis and scoring build on it) and no Ray (``pipelines/``
adapts a stage to a Ray Data pool). Import from here."""
from curation.engine.options import ConfigError, between, parse, plain, unknown_keys
from curation.engine.rows import ALIVE, KEPT, QUARANTINED, REJECTED, alive, quarantine, reject, shed, transient
from curation.engine.stage import (Chain, ChainError, NoOptions, Resources, Stage, UndeclaredColumn, UndeclaredReason,
                                   chain_schema, run_chain, run_stage, score_and_threshold)

__all__ = ["ALIVE", "KEPT", "QUARANTINED", "REJECTED", "Chain", "ChainError", "ConfigError", "NoOptions", "Resources",
           "Stage", "UndeclaredColumn", "UndeclaredReason", "alive", "between", "chain_schema", "parse",
           "plain", "quarantine", "reject", "run_chain", "run_stage", "score_and_threshold", "shed", "transient",
           "unknown_keys"]
