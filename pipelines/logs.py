"""A readable terminal: our own lines, progress bars and errors stay on it; library warnings, Ray's
log lines (its C++ core's included) and worker output go to ``DIR/_work/logs/``."""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import sys
import time
from pathlib import Path

from infu_model.storage import as_path, cache_home, is_uri

# Ray Data's progress report as log records: on a terminal it stays there, elsewhere it goes to the log file
PROGRESS_LOGGER = "ray.data._internal.progress.logging_progress"


# what libraries say when they are imported about optional parts this project leaves out on purpose
# (torchvision, torchao's CUDA kernels on a CPU, bitsandbytes' kernel hub, whose `kernels` package says
# it skips a trust check under HF_HUB_OFFLINE=1): not news to a user
IMPORT_NOTICES = ("transformers.utils.import_utils", "torchao", "bitsandbytes", "torch.utils._pytree",
                  "diffusers.quantizers.torchao.torchao_quantizer", "kernels")


@contextlib.contextmanager
def progress_lines(what: str, total: int | None, done, log, every: float | None = None):
    """Where stderr is not a terminal (a pipe, a log file, ``ray job submit``) and so shows no bars: while
    the block runs, a line at most every ``every`` seconds (``INFU_PROGRESS_S``, default 30) saying how far it
    is, ``what: N of TOTAL rows (R rows/s, about M:SS left)``, when the count moved (else every tenth time);
    ``done()`` counts (``total`` None: unknown)."""
    if sys.stderr.isatty():
        yield
        return
    import threading

    every = every if every is not None else float(os.environ.get("INFU_PROGRESS_S", "30"))
    stop, t0 = threading.Event(), time.time()

    def report():
        said, quiet = None, 0
        while not stop.wait(every):
            n, seconds = done(), time.time() - t0
            quiet += 1
            if n == said and quiet < 10:  # nothing new: a line only now and then, to say it still runs
                continue
            rate = n / seconds if seconds else 0.0
            left = f", about {_clock((total - n) / rate)} left" if total and rate > 0 and n < total else ""
            of = f" of {total}" if total else ""
            log(f"{what}: {n}{of} rows ({rate:.1f} rows/s{left})")
            said, quiet = n, 0

    thread = threading.Thread(target=report, name="infu-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def quiet_import_notices() -> None:
    for name in IMPORT_NOTICES:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_loading() -> None:
    """``infu generate`` and ``infu app`` say what they fetch (download bars) and one line when done: no
    bars for reading weights from disk, and not diffusers' notice about its own deprecated import inside
    ``FluxControlNetModel`` (diffusers' call, not ours; our calls use the current arguments)."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`FluxPosEmbed` is deprecated", category=FutureWarning)


def _console_handlers():
    """(logger, handler) for every handler that writes to the console rather than a file."""
    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    return [(lg, h) for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


# the logging modules of libraries that add a stderr handler of their own on first use
LIBRARY_LOGGING = ("transformers.utils.logging", "diffusers.utils.logging")


def _hand_over(lib) -> None:
    lib.disable_default_handler()
    lib.enable_propagation()


class _WhenImported(importlib.abc.MetaPathFinder):
    """Hands a library's logging over (``_hand_over``) as its logging module is imported: importing
    diffusers only to configure it would cost every job's driver 3 s (torch with it), most never use it."""

    def __init__(self, modules):
        self.modules = set(modules)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.modules:
            return None
        self.modules.discard(fullname)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _hand_over(module)

            spec.loader.exec_module = exec_module
        return spec


def _hand_over_library_logging() -> _WhenImported:
    """transformers and diffusers add their own stderr handler on first use: a library already imported is
    configured now, the others when they are; their records reach the root logger (our log file). The
    finder returned is the one to take out of ``sys.meta_path`` when the job ends."""
    for name in LIBRARY_LOGGING:
        if name in sys.modules:
            _hand_over(sys.modules[name])
    later = _WhenImported(name for name in LIBRARY_LOGGING if name not in sys.modules)
    sys.meta_path.insert(0, later)
    return later


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False  # a captured stream (click's test runner, a notebook): nothing to swap


def log_folder(out_dir) -> Path:
    """Where a job's logs go: ``out_dir/_work/logs``, or, for an output in object storage, a folder on this
    machine (``~/.cache/infu/logs/SCHEME/BUCKET/KEY``)."""
    if not is_uri(out_dir):
        return Path(out_dir).expanduser() / "_work" / "logs"
    scheme, rest = str(out_dir).split("://", 1)
    return cache_home() / "logs" / scheme / rest.strip("/") / "_work" / "logs"


def upload_logs(logs: Path, out_dir) -> str:
    """The run's log files (and the folder's run history) copied into the bucket; where they went."""
    target = as_path(out_dir) / "_work"
    with contextlib.suppress(OSError):
        for f in [*logs.glob("*.log"), logs.parent / "runs.jsonl"]:
            if f.is_file():
                (target / ("logs" if f.suffix == ".log" else "") / f.name).write_bytes(f.read_bytes())
    return str(target / "logs")


def link_ray_logs(logs: Path) -> str:
    """``logs/ray`` -> this node's Ray session logs (every worker's stdout/stderr); what to tell the user."""
    import ray

    ctx = ray.get_runtime_context()
    session = Path(ctx.get_temp_dir()) / ctx.get_session_name() / "logs"
    if not session.is_dir():  # ray:// client: the logs stay on the cluster
        return "worker logs: on each Ray node (ray logs / the dashboard)"
    link = logs / "ray"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(session, target_is_directory=True)
    return f"worker logs: {link} (this node's Ray session; other nodes: `ray logs` / the dashboard)"


class LogFile(logging.StreamHandler):
    """The job's log file, where a line that cannot be written (a full disk) is dropped without a word:
    the run's own error, on the terminal, says what happened."""

    def handleError(self, record) -> None:
        pass


@contextlib.contextmanager
def job_logs(out_dir: str | Path, name: str):
    """Route everything but our own output to ``out_dir/_work/logs/<name>.log`` while the job runs.

    The file takes stderr at the descriptor level (C/C++ code, child processes), ``sys.stdout`` and every
    console logging handler; ``sys.stderr`` stays on the terminal for our lines, progress bars and errors.
    An output in object storage (where a file cannot be appended to) gets its log on this machine
    (``log_folder``), copied into ``out_dir/_work/logs/`` when the job ends."""
    logs = log_folder(out_dir)
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{name}.log"
    started, t0, ended = time.strftime("%Y-%m-%d %H:%M:%S"), time.time(), "error"
    import ray.data  # noqa: F401  (configures Ray Data's loggers now, so the routing below sees them)

    finder = _hand_over_library_logging()
    sink = open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    sink.write(f"\n===== infu {name}  {started}  pid {os.getpid()}\n")
    to_file = LogFile(sink)
    to_file.setLevel(logging.INFO)  # Ray Data's DEBUG chatter has its own file in Ray's session logs
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    moved = _console_handlers()
    for lg, h in moved:
        lg.removeHandler(h)
        lg.addHandler(to_file)
    root = logging.getLogger()
    if to_file not in root.handlers:
        root.addHandler(to_file)
    logging.captureWarnings(True)

    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    old_stderr, old_stdout = sys.stderr, sys.stdout
    sys.stdout = sink  # where Ray's driver prints the cluster's own notices ("(raylet) The node ... marked dead")
    if _writes_to_fd2(old_stderr):
        sys.stderr = open(saved, "w", buffering=1, encoding=old_stderr.encoding, errors="backslashreplace",
                          closefd=False)
    progress = logging.getLogger(PROGRESS_LOGGER)  # (kept on a terminal; elsewhere it goes to the log file)
    on_screen = logging.StreamHandler(sys.stderr)
    on_screen.setFormatter(logging.Formatter("%(message)s"))
    progress_propagate = progress.propagate
    if sys.stderr.isatty():
        progress.addHandler(on_screen)
        progress.propagate = False
    try:
        yield path
        ended = "ok"
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (pipelines.ray_runtime.Terminated)
        ended = "interrupted"
        raise
    finally:
        notes = [f"logs: {path} (library warnings, Ray's own lines)"]
        with contextlib.suppress(Exception):
            if ray.is_initialized():
                notes.append(link_ray_logs(logs))
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr, sys.stdout = old_stderr, old_stdout
        progress.removeHandler(on_screen)
        progress.propagate = progress_propagate
        logging.captureWarnings(False)
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        for lg, h in moved:
            lg.removeHandler(to_file)
            lg.addHandler(h)
        root.removeHandler(to_file)
        with contextlib.suppress(OSError):  # a full disk: the run's own error says so
            sink.close()
        with contextlib.suppress(OSError), open(logs.parent / "runs.jsonl", "a") as f:  # what made this folder
            f.write(json.dumps({"argv": ["infu", *sys.argv[1:]], "started": started, "seconds": round(time.time() - t0, 1),
                                "ended": ended}) + "\n")
        if is_uri(out_dir):
            notes[0] = f"logs: {upload_logs(logs, out_dir)} (library warnings, Ray's own lines; here: {path})"
        for note in notes:
            print(note, file=sys.stderr, flush=True)
