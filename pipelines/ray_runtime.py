"""Starting or joining Ray: embedded on this machine by default, a cluster when asked."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from unittest import mock


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: what finished stays, and the rerun resumes (exit 143, not 130)."""


def stop_on_sigterm() -> None:
    """SIGTERM raises ``Terminated`` in the main thread (``ray.init`` puts its own exit handler in place:
    this is called again after it)."""
    import signal
    import threading

    def terminated(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminated)


class ClusterUnreachable(ConnectionError):
    """Nothing answers at the Ray cluster address given (raised before any work, in one line)."""


def check_cluster(address: str | None, timeout: float = 5.0) -> None:
    """A cluster address (``--ray-address`` or ``RAY_ADDRESS``: ``host:port`` of the head's GCS, or
    ``ray://host:port``) where nothing answers is refused within seconds, before any output is
    claimed: ``ray.init`` would retry for minutes with its messages in the log file. ``auto`` is left
    to Ray (it fails at once when it finds no cluster); no address means an embedded Ray."""
    import socket
    import urllib.parse

    given = address or os.environ.get("RAY_ADDRESS")
    if not given or given in ("auto", "local"):
        return
    parsed = urllib.parse.urlsplit(given if "://" in given else f"gcs://{given}")
    try:
        host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    except ValueError:
        host = port = None
    if not host:
        raise ClusterUnreachable(f"{given} is not a Ray cluster address (host:port of the head, or ray://host:port)")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ClusterUnreachable(f"no Ray cluster answers at {given} ({e.strerror or e}): start one with "
                                 "`ray start --head` (it prints its address), or give the head's address with "
                                 "--ray-address / RAY_ADDRESS; without either, the job runs on an embedded Ray"
                                 ) from None


def stop_monitor() -> None:
    """Kill the autoscaler monitor of the Ray this process started (a no-op on a cluster), once its
    job has ended well. At exit ``ray.shutdown`` stops the GCS first, and the monitor answers its
    SIGTERM by reporting to that GCS: a second lost before Ray kills it. An embedded Ray has nothing
    to autoscale. Not after an interrupt: a run stopped mid-training then crashed in Ray's shutdown."""
    if "ray" not in sys.modules:  # the job started no Ray
        return
    import ray
    # private, for want of a public way: ray.init neither takes RayParams.no_monitor nor names its processes
    from ray._private import ray_constants

    node = getattr(ray._private.worker, "_global_node", None)
    for info in (node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node else []):
        if info.process.poll() is None:
            info.process.kill()


def init_ray(address: str | None, opts=None, progress: bool = False) -> None:
    """Start (``opts``: the job's ``ray`` block, a ``pipelines.job.RayOptions``) or join Ray. Workers'
    output stays in Ray's session logs (``pipelines.logs`` links them beside the job's output):
    errors come back as exceptions and quarantine rows, not as forwarded lines. Workers read models
    from their node's cache (the driver made them ready: pipelines/models.py); on a cluster every
    other node first pulls them into its own, and a node that joins later fetches what it lacks once."""
    import ray
    from ray.data import DataContext

    from infu_model.hub import FETCH_ENV
    from pipelines.models import hub_settings, pull_on_nodes, ready_needs, share_token

    joined = bool(address or os.environ.get("RAY_ADDRESS"))
    if not ray.is_initialized():
        if joined:
            import curation
            import infu_model
            import pipelines
            import synth

            # ship our code to the cluster's workers (a no-op cost under `ray job submit --working-dir`);
            # as folders, not module objects: Ray deep-copies them into the job's runtime env
            code = [str(Path(m.__file__).parent) for m in (curation, synth, infu_model, pipelines)]
            # the driver's object-storage settings (an S3-compatible endpoint, region, profile or keys)
            # reach the workers that read the job's data; a node's instance role needs none of them
            storage = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_APPLICATION_CREDENTIALS"))}
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                     runtime_env={"py_modules": code, "env_vars": {FETCH_ENV: "node", **hub_settings(), **storage},
                                  "worker_process_setup_hook": "pipelines.models.setup_worker"})
            share_token()
        else:
            # an embedded Ray's workers inherit the raylet's environment, the driver's storage settings
            # with it: with a runtime_env instead, no task or actor could use the workers Ray
            # prestarts (a new process for each, ~1 s)
            with mock.patch.dict(os.environ, {FETCH_ENV: "node"}):
                ray.init(num_cpus=opts.num_cpus if opts else None,
                         object_store_memory=opts.object_store_memory if opts else None,
                         include_dashboard=False, logging_level=logging.WARNING, configure_logging=True,
                         log_to_driver=False)
            # Ray Data's usage-stats actor: one more worker process (~1 CPU-s) at the start of each
            # job on the embedded Ray; RAY_DATA_USAGE_DISABLED=0 keeps it
            os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
    stop_on_sigterm()  # ray.init replaced the handler with its own sys.exit
    ctx = DataContext.get_current()
    # Ray Data's second Parquet reader lists the files in a task and reads their footers in an actor:
    # two more worker processes and about a second before the first row on a small machine. Our
    # jobs name their files, so the first reader (footers read by the driver) costs less.
    ctx.use_datasource_v2 = False
    # Ray Data reserves a share of the CPUs for each operator; on a small machine that
    # leaves the decode stage one core of two. Off unless the config asks for it.
    ctx.op_resource_reservation_enabled = bool(opts and opts.reserve_per_operator)
    # on a terminal Ray Data draws its bars; anywhere else (a pipe, a log, `ray job submit`) it would print
    # its whole plan every few seconds instead: our own line every so often says how far (logs.progress_lines)
    ctx.enable_progress_bars = progress and sys.stderr.isatty()
    ctx.use_ray_tqdm = False  # Ray's tqdm draws through the worker-log channel, which we keep off the terminal
    ctx.print_on_execution_start = False
    if joined:  # (an embedded Ray's one node is the driver's, whose cache it shares)
        pull_on_nodes(ready_needs())
