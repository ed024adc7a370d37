"""What runs in Ray Train's controller for ``infu train``: the callbacks that pass worker 0's metrics
and the failures Ray Train recovers from to the driver. Light on purpose: the controller unpickles
them, and importing the training stack there (torch, diffusers) would cost every run seconds before
its first step."""
from __future__ import annotations

import re

from pipelines.faults import TrainingRefused


def watched_by(queue) -> list:
    """Ray Train callbacks (they run in its controller) that put on ``queue`` for the driver worker 0's
    reported metrics and each failure Ray Train recovers from: the workers' and the controller's output
    stay in their logs."""
    # private, for want of a public way: the public UserCallback sees reports and the final failure, only
    # the controller's callback sees the failures Ray Train recovers from
    from ray.train.v2._internal.execution.callback import ControllerCallback
    from ray.train.v2.api.callback import UserCallback
    from ray.train.v2.api.exceptions import WorkerGroupError

    class ReportedMetrics(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and "loss" in metrics[0]:  # a checkpoint reported between log records has none
                queue.put(metrics[0])

        def after_exception(self, run_context, worker_exceptions):
            # data or a checkpoint the workers refuse would be refused again by every retry: raising here
            # ends the run (a failing callback is not retried) with the refusal as its error
            refused = [e for e in worker_exceptions.values() if isinstance(e, TrainingRefused)]
            if refused:
                raise refused[0]

    class Recoveries(ControllerCallback):
        def after_controller_state_update(self, previous_state, current_state):
            error = getattr(current_state, "training_failed_error", None)
            if type(current_state).__name__ in ("RestartingState", "ReschedulingState") and error is not None:
                # lost workers are restarted; a worker group that could not be placed in time is waited for
                queue.put({"lost": lost_workers(error)} if isinstance(error, WorkerGroupError) else {"waiting": 1})

    return [ReportedMetrics(), Recoveries()]


def lost_workers(error) -> str:
    """Which workers a failed worker group lost and where ('worker 1 on 10.0.0.7 (its node died)'); else
    which lost the connection to another (a survivor's collective can fail before Ray Train sees the
    node die); else the first failure's first line."""
    failures = getattr(error, "worker_failures", None) or {}
    lost = []
    for rank, e in sorted(failures.items()):
        if died(e) is not None:
            text = str(e)  # a failed health check's text has the worker's node_ip; an actor error its ip
            ip = re.search(r"\bnode_ip='([^']+)'|\bip: (\S+)", text)
            node = " (its node died)" if re.search(r"node .*(died|dead)|(died|dead).* node", text, re.I | re.S) else ""
            lost.append(f"worker {rank}{f' on {ip.group(1) or ip.group(2)}' if ip else ''}{node}")
    if lost:
        return ", ".join(lost)
    cut = {rank: e for rank, e in sorted(failures.items()) if peer_lost(e)}
    if cut:
        return (f"the connection of worker {', '.join(map(str, cut))} to another worker "
                f"({first_line(next(iter(cut.values())))})")
    return first_line(next(iter(failures.values()), error))


def first_line(e) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


# what gloo and NCCL say when the worker at the other end of a collective is gone
PEER_LOST = re.compile(r"Connection (reset|closed) by peer|remote process exited|communicator was aborted", re.I)


def peer_lost(failure) -> bool:
    """``failure`` is a collective that lost the worker at its other end (gloo, NCCL)."""
    return bool(PEER_LOST.search(str(failure)))


def died(failure):
    """The error saying a worker's process or node died or stopped answering, if that is what ``failure``
    is (directly or behind a failed health check), else None."""
    from ray.exceptions import RayActorError

    failure = getattr(failure, "health_check_failure", failure)
    hung = type(failure).__name__ == "WorkerHealthCheckTimeoutError"
    return failure if hung or isinstance(failure, RayActorError) else None


def lost_for_good(error) -> bool:
    """Ray Train gave up on a worker group that lost a worker (its process or node died), or whose
    collective lost its other end: when a node dies, its survivor's gloo error can be the failure Ray
    Train sees first."""
    return any(died(f) is not None or peer_lost(f) for f in (getattr(error, "worker_failures", None) or {}).values())
