"""A run's hold on an output in object storage, where there is neither a file lock nor a rename.

Two small objects stand in for a local folder's live lock (``pipelines/job.py``) and lease
(``pipelines/sink.py``):

- ``_work/live``: who runs on the output now (run, job, host, pid, started). The driver rewrites it
  every ``BEAT_S`` seconds while its job runs and deletes it when the job ends; a record not
  rewritten for ``stale_s()`` is a dead run's (a killed driver stops beating), so a rerun after
  ``kill -9`` waits at most that long. Where the store has conditional writes (S3: If-None-Match,
  If-Match) the record is created only if absent and taken over only from the version read, so of
  two drivers starting at once exactly one runs, and its age is the store's own (its Date header
  against the object's LastModified, on any S3 store): no host's clock counts. A store without them
  (detected once, said in the job log) is read then written; outside S3, ages are the writer's
  clock against the reader's (hosts' clocks must agree).
- ``_work/seal.json``: which objects the workers wrote count. Every worker object carries its run's
  id in its name (``part-HASH.RUN.parquet``: write-once, a retried task rewrites its own). A run,
  first thing, seals its output: the objects the previous seal named plus the previous run's own,
  then works under its own id. Readers count an object when the seal names it or it is the sealing
  run's. A killed run's workers outlive its driver by seconds: an object one writes after the rerun
  sealed is never counted (the rerun writes those rows itself), so no row is counted twice, and the
  driver alone publishes what counts to the output's ``kept/`` and ``rejected/``, under the
  names the same rows get in a local folder (without the run id).
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from infu_model.storage import ObjectPath, bucket_of, conditional_writes, put_if, read_versioned
from pipelines.sink import Superseded

log = logging.getLogger(__name__)

BEAT_S = 5.0


def stale_s() -> float:
    """Seconds without a heartbeat after which a run is taken as dead (``INFU_BUCKET_STALE_S``, default 30)."""
    return float(os.environ.get("INFU_BUCKET_STALE_S", "30"))


class BucketLease:
    """The seal of a run on an output in object storage (the bucket's counterpart of ``sink.Lease``)."""

    def __init__(self, path: ObjectPath, run_id: str, counted: frozenset = frozenset()):
        self.path, self.run_id, self.counted = path, run_id, counted

    @classmethod
    def take(cls, path: ObjectPath, prefixes: list[ObjectPath]) -> BucketLease:
        """Seal what the earlier runs wrote under ``prefixes`` and start a new run."""
        before = read_seal(path)
        named, run = set(before.get("objects", [])), before.get("run")
        present = {o.name for p in prefixes for o in p.glob("*.parquet")}  # (what was published is gone from here)
        counted = {n for n in present if n in named or (run is not None and run_of(n) == run)}
        lease = cls(path, uuid.uuid4().hex[:16], frozenset(counted))
        path.write_text(json.dumps({"run": lease.run_id, "objects": sorted(counted)}))
        return lease

    @classmethod
    def start(cls, path: ObjectPath) -> BucketLease:
        """A new run on an output with nothing in it that counts (after ``--overwrite`` cleared it)."""
        lease = cls(path, uuid.uuid4().hex[:16])
        path.write_text(json.dumps({"run": lease.run_id, "objects": []}))
        return lease

    @classmethod
    def current(cls, path: ObjectPath) -> BucketLease | None:
        seal = read_seal(path)
        return cls(path, seal["run"], frozenset(seal.get("objects", []))) if seal.get("run") else None

    def __getstate__(self) -> dict:  # what a write task carries: workers check and tag; only the driver counts
        return {**self.__dict__, "counted": frozenset()}

    @contextmanager
    def held(self):
        """While this run is still the sealing one (else ``Superseded``); an object written after a
        rerun sealed is not counted whatever this says, so the check only saves the upload."""
        if read_seal(self.path).get("run") != self.run_id:
            raise Superseded(f"{self.path.parent.parent} was taken over by another run; this one stops writing")
        yield

    def tag(self, name: str) -> str:
        """A worker object's name, carrying this run's id."""
        stem, ext = posixpath.splitext(name)
        return f"{stem}.{self.run_id}{ext}"

    def counts(self, files: list[str]) -> list[str]:
        """Those of ``files`` that count: named in the seal, or this run's own."""
        return [f for f in files if posixpath.basename(str(f)) in self.counted
                or run_of(posixpath.basename(str(f))) == self.run_id]


def read_seal(path: ObjectPath) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def run_of(name: str) -> str | None:
    """The run id a worker object's name carries (``part-HASH.RUN.parquet``), or None."""
    parts = name.split(".")
    return parts[-2] if len(parts) >= 3 else None


def untagged(name: str) -> str:
    """A worker object's name without its run id, as the output publishes it (``part-HASH.parquet``,
    the name the same rows get in a local folder: readers that order files by name see the same order)."""
    parts = name.split(".")
    return ".".join(parts[:-2] + parts[-1:]) if len(parts) >= 3 else name


class LiveElsewhere(Exception):
    """Another run holds the output (``holder``: its live record, with ``seen_s``)."""

    def __init__(self, holder: dict):
        super().__init__(holder)
        self.holder = holder


class Heartbeat:
    """A driver's live record on an output in object storage, rewritten every ``BEAT_S`` seconds;
    ``take`` creates it or refuses (``LiveElsewhere``)."""

    def __init__(self, path: ObjectPath, job: str):
        self.path, self.etag = path, None
        self.exclusive = conditional_writes(str(path.parent))
        if not self.exclusive:
            log.warning("%s: the store has no conditional writes: a live run is known by its heartbeat alone, "
                        "judged by the hosts' clocks", bucket_of(path))
        self.info = {"run": uuid.uuid4().hex[:12], "job": job, "host": socket.gethostname(), "pid": os.getpid(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._stop = threading.Event()

    @classmethod
    def take(cls, path: ObjectPath, job: str) -> "Heartbeat":
        hb = cls(path, job)
        if hb.exclusive:
            hb.etag = put_if(path.uri, hb.record())
            if hb.etag is None:  # there is a record: a live run's, or a dead one's taken over from its version
                seen = read_versioned(path.uri)
                holder = _fresh(seen)
                if holder is not None:
                    raise LiveElsewhere(holder)
                hb.etag = put_if(path.uri, hb.record(), etag=seen[1] if seen else None)
                if hb.etag is None:  # another run took it over in the same moment
                    raise LiveElsewhere(_fresh(read_versioned(path.uri)) or {})
        else:
            holder = live_record(path)
            if holder is not None:
                raise LiveElsewhere(holder)
            hb.beat()
        hb._thread = threading.Thread(target=hb._run, name="infu-heartbeat", daemon=True)
        hb._thread.start()
        return hb

    def record(self) -> bytes:
        return json.dumps({**self.info, "beat": time.time()}).encode()

    def beat(self) -> None:
        if not self.exclusive:
            self.path.write_bytes(self.record())
        elif self.etag is not None:
            self.etag = put_if(self.path.uri, self.record(), etag=self.etag)
            if self.etag is None:  # taken over: the seal stops this run's writes (``BucketLease.held``)
                log.warning("%s: another run took this output over", self.path.parent.parent)

    def _run(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                self.beat()
            except Exception as e:  # noqa: BLE001 - a store that does not answer for a moment, credentials
                log.warning("%s: heartbeat not written (%s); the next one tries again", self.path, e)  # being renewed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            if self.etag is not None or not self.exclusive:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass


def live_record(path: ObjectPath) -> dict | None:
    """The live record at ``path`` when its run still beats (with ``seen_s``, seconds since), else None."""
    if path.uri.startswith("s3://"):  # (any S3 store answers with its own time and the object's)
        return _fresh(read_versioned(path.uri))
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        rec = {}
    return _fresh((None, None, time.time() - float(rec.get("beat", 0))), rec)


def _fresh(seen, rec: dict | None = None) -> dict | None:
    """The record of ``seen`` (bytes, etag, age in seconds) when it is younger than ``stale_s()``."""
    if seen is None or seen[2] >= stale_s():
        return None
    if rec is None:
        try:
            rec = json.loads(seen[0])
        except ValueError:  # (a record cut short: whose it is is unknown, that it is live is not)
            rec = {}
    return {**rec, "seen_s": round(seen[2], 1)}
