"""Faults that are not the user's mistake, each told in one line: a full disk (or quota) wherever the write
happened (the driver, a Ray task, a training worker), found behind whatever wrapped it."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

from infu_model.storage import is_uri

NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# how libraries that do not keep the OSError say it: pyarrow and Ray in text, safetensors as Rust's io kind
NO_SPACE_WORDS = {"No space left on device": errno.ENOSPC, "StorageFull": errno.ENOSPC,
                  "Disk quota exceeded": errno.EDQUOT, "QuotaExceeded": errno.EDQUOT}


class TrainingRefused(ValueError):
    """What training workers refuse to train on (data that forms no batch, a checkpoint that could run
    code): one line, never retried, since every retry would refuse it again."""


class WorkersLost(RuntimeError):
    """Training lost workers (a process or a node died) more often than ``ray.max_failures`` allows."""


def causes(exc: BaseException):
    """``exc`` and every exception behind it: chained ones, a Ray task's cause, a training worker's or
    controller's failure."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        failures = getattr(e, "worker_failures", None)
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "controller_failure", None),
                 *(failures.values() if isinstance(failures, dict) else ())]


def no_space(exc: BaseException) -> tuple[int, str | None] | None:
    """(errno, the file it was writing if known) when ``exc`` is, or hides, a full disk or quota."""
    for e in causes(exc):
        if isinstance(e, OSError) and e.errno in NO_SPACE:  # (Ray's copy of one may hold text as its filename)
            path = e.filename if isinstance(e.filename, str) and "\n" not in e.filename else None
            return e.errno, path if path and Path(path).is_absolute() else None
    for e in causes(exc):
        text = str(e)
        for words, code in NO_SPACE_WORDS.items():
            if words in text:
                return code, None
    return None


def disk_full_line(exc: BaseException, out_dir) -> str | None:
    """One line for a full disk behind ``exc`` (None when it is something else): the folder it hit, the
    space free there now, and that the same command resumes once space is freed."""
    found = no_space(exc)
    if found is None:
        return None
    code, filename = found
    if not filename and is_uri(out_dir):  # the output is in a bucket: a local disk ran short (logs, Ray's spill)
        return f"{NO_SPACE[code]} on this machine: free some space, then rerun the same command to resume"
    folder = Path(filename).parent if filename else Path(out_dir)
    where = next((p for p in (folder, *folder.parents) if p.exists()), None)
    free = f", {human_size(shutil.disk_usage(where).free)} free there now" if where else ""
    return f"{NO_SPACE[code]} writing to {folder}{free}: free some space, then rerun the same command to resume"


def human_size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n // 1024} KiB"
