"""Every model a job names, made ready once, in the driver, before any work (infu_model/hub.py).

A job's config lists its models (``needs()``: reference, the files its loader reads, purpose). The
driver resolves them all (fetching what the Hub cache lacks, with progress bars) before its output
folder is claimed or a Ray worker starts, so an unusable model is one line and nothing has been
written. On a cluster each other node then pulls them once into its own cache through a Ray task
(``pull_on_nodes``: where the cache is shared storage it finds every file there). Ray workers read
their node's cache (``INFU_MODELS_FETCH=node``, set by ``pipelines.ray_runtime.init_ray``); a node
that joined after the job started fetches what it lacks once, under a lock, with the driver's token,
which workers ask a job-scoped actor for (``setup_worker``) instead of finding it in the runtime
environment Ray's dashboard shows.
"""
from __future__ import annotations

import functools
from pathlib import Path

from infu_model.hub import ModelError, ModelNotCached, ModelRef, Need, hub_cache, resolve

_READY: dict = {}   # (reference text, selection) -> local path: what this driver has made ready


def fetch_models(needs, log=None) -> list[tuple[Need, Path]]:
    """Each model of ``needs`` (and those its files call for) ready in the local cache; returns them
    with their paths. Already-ready ones cost nothing."""
    out, todo = [], list(needs)
    while todo:
        need = todo.pop(0)
        key = (need.ref.text, need.selection)
        if key not in _READY:
            try:
                _READY[key] = resolve(need.ref, need.selection, fetch=True)
            except ModelError as e:  # which model it is, in the same one line
                raise type(e)(f"{need.purpose}: {e}" if need.purpose else str(e)) from None
        out.append((need, _READY[key]))
        if need.then is not None:
            todo[:0] = need.then(_READY[key])
    named = {n.ref.text for n, _ in out if n.ref.fetched}
    if log is not None and named:
        log(f"models: {len(named)} ready in the cache ({hub_cache()})")
    return out


def ready_needs() -> list[Need]:
    """What this driver made ready, for the other nodes of a cluster to pull."""
    return [Need(ModelRef.parse(text), selection) for text, selection in _READY]


def _pull(needs: list[Need]) -> int:
    """On one node: each model ready in this node's cache; returns how many had to be fetched."""
    fetched = 0
    for need in needs:
        try:
            resolve(need.ref, need.selection, fetch=False)
        except ModelNotCached:
            resolve(need.ref, need.selection)  # (a worker: once per node, under a lock)
            fetched += 1
    return fetched


CREDENTIALS = "infu-hub-credentials"


def hub_settings() -> dict:
    """The driver's Hub settings for a cluster's workers: the endpoint and the offline switch. Never
    the token: the runtime environment's variables are shown on Ray's dashboard."""
    import os

    return {k: os.environ[k] for k in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(k)}


def share_token() -> None:
    """On a cluster, the driver's Hub token (HF_TOKEN or `hf auth login`) held by an actor of this job
    for its workers to ask (``setup_worker``), so a gated model fetches on every node as it did here."""
    import ray
    from huggingface_hub import get_token

    global _HOLDER
    token = get_token()
    if token:  # (the handle is kept: a named actor with no handle left is collected)
        _HOLDER = ray.remote(num_cpus=0)(_Credentials).options(name=CREDENTIALS).remote(token)


_HOLDER = None


class _Credentials:
    def __init__(self, token: str):
        self._token = token

    def token(self) -> str:
        return self._token


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` on a cluster: a worker that must fetch uses the driver's token."""
    from infu_model import hub

    hub.token_source = _driver_token


@functools.lru_cache(maxsize=1)
def _driver_token() -> str | None:
    import ray

    try:
        return ray.get(ray.get_actor(CREDENTIALS).token.remote())
    except ValueError:  # the driver has no token: huggingface_hub's own on this node
        return None


def pull_on_nodes(needs: list[Need], log=None) -> dict:
    """Each alive node of the Ray cluster pulls ``needs`` into its own cache once (a task pinned to it;
    each node keeps its own HF_HOME); returns {node id: models fetched there}. A node that cannot get
    one ends the job in one line."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    needs = [n for n in needs if n.ref.fetched]
    if not needs:
        return {}
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    task = ray.remote(num_cpus=0, max_retries=0)(_pull)
    calls = {node: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(needs)
             for node in nodes}
    done = {}
    for node, call in calls.items():
        try:
            done[node] = ray.get(call)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), ModelError) else None
            raise ModelError(f"node {node[:8]}: {cause or e}") from None
    if log is not None and any(done.values()):
        log(f"models: pulled on {sum(1 for v in done.values() if v)} of {len(nodes)} nodes")
    return done


# -------------------------------------------------------------------------------- infu models, doctor --
def expanded(needs) -> list[Need]:
    """``needs`` with the models their files call for, where those files are already cached (a model not
    yet fetched cannot say which face backend it needs: ``infu models pull`` finds out)."""
    out, todo = [], list(needs)
    while todo:
        need = todo.pop(0)
        out.append(need)
        if need.then is not None:
            try:
                todo[:0] = need.then(resolve(need.ref, need.selection, fetch=False))
            except ModelError:
                pass
    return out


def job_needs(configs: dict) -> list[tuple[str, Need]]:
    """(jobs, need) for every model the given typed configs name, each (reference, files) once, with the
    names of the configs that load it ("stage1,synth,eval")."""
    rows: dict = {}
    for name, cfg in configs.items():
        for need in expanded(cfg.needs()):
            jobs, first = rows.setdefault((need.ref.text, need.selection), ([], need))
            jobs.append(name)
    return [(",".join(dict.fromkeys(jobs)), need) for jobs, need in rows.values()]


def status_line(need: Need, online: bool = False) -> str:
    """``reference (purpose): cached at PATH | not cached | not found``, with size, licence and gate when
    known, or what stops it being fetched (not on the endpoint, gated, no such revision...)."""
    from infu_model.hub import describe

    s = describe(need.ref, need.selection, online)
    facts = [f"{s.size / 1e9:.2f} GB" if s.size and s.size >= 1e8 else f"{s.size / 1e6:.1f} MB" if s.size else None,
             f"licence {s.license}" if s.license else None, "gated: accept its licence on the Hub" if s.gated else None,
             s.problem]
    where = (f"cached at {s.where}" if s.cached else "not cached") if need.ref.fetched else \
        ("found" if s.cached else "not found")
    extra = "; ".join(f for f in facts if f)
    return f"{need.ref} ({need.purpose or 'model'}): {where}" + (f"; {extra}" if extra else "")


def known_selections(ref_text: str, configs: dict) -> list:
    """The selections the given configs read ``ref_text`` with (``infu models pull REF`` fetches what
    the jobs read, not everything in the repo)."""
    return sorted({need.selection for _, need in job_needs(configs) if need.ref.text == ref_text}, key=repr)
