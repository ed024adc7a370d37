"""Row status: every row a job's stages see ends kept, rejected with a reason, or quarantined with
the error, and is written either way, so that every input is accounted for.

Columns whose name starts with ``_`` hand data from one stage to the next inside a job (a decoded
image, the source record's fields); they never reach the output. Where stages are chained
(``run_chain``, the Ray adapter), a row sheds them once it is rejected or quarantined.
"""
from __future__ import annotations

KEPT, REJECTED, QUARANTINED = "kept", "rejected", "quarantined"
ALIVE = "pending"  # still moving through the stages
STATUS_COLUMNS = ("status", "reason", "error")  # every stage may set these (reject, quarantine)


def alive(row: dict) -> bool:
    return row["status"] == ALIVE


def reject(row: dict, reason: str) -> None:
    row["status"], row["reason"] = REJECTED, reason


def quarantine(row: dict, reason: str, error: BaseException | str) -> None:
    row["status"], row["reason"] = QUARANTINED, reason
    row["error"] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"


def transient(name: str) -> bool:
    """Whether a column only hands data between stages (never written out)."""
    return name.startswith("_")


def shed(rows: list[dict], columns=None) -> None:
    """Clear the hand-over columns (``columns``, else every transient one) of the rows that left the
    stages: a decoded image a rejected row carries on costs memory and transfers for nothing."""
    for row in rows:
        if not alive(row):
            for k in columns if columns is not None else [k for k in row if transient(k)]:
                row[k] = None
