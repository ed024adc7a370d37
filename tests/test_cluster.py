"""A real local Ray cluster (`ray start --head`, declaring two GPUs it does not have; stopped by
pid afterwards): `ray job submit --working-dir .` and `--ray-address` give the same curate output
as the embedded run, and resolved GPU pools get their GPUs."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from test_curate import EXPECTED
from test_models import hub, published  # noqa: F401 - fixtures: the local Hub

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    tmp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths live under it
    gcs, dash = free_port(), free_port()
    # `ray start` gives its dashboard 60 s to come up, and stops with "Failed to read dashboard.err" when a
    # busy 2-core machine takes longer (seen in CI): 4 minutes here
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "240",
           # Ray Train's own 2 s health checks here, as a user's cluster has them (conftest sets 0.2 s): polled
           # 10x as often, the controller can see the survivor's gloo "Connection reset by peer" before the
           # lost node's death, and then names the lost connection instead of the node this test looks for
           # (tests/test_logs.py holds that case to its one line)
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0",
           # a node killed by the tests is dead for the cluster after 3 failed checks 1 s apart (refused at
           # once), not Ray's default 5 checks 3 s apart: the lost-node run waits 24 s less for its two losses
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    # every port its own: the test session's embedded Ray already holds the default agent ports
    ports = [f"--{p}-port={free_port()}" for p in ("dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                                                   "runtime-env-agent", "ray-client-server", "node-manager",
                                                   "object-manager")]
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "2",
                             "--port", str(gcs), "--dashboard-port", str(dash), "--include-dashboard", "true",
                             "--disable-usage-stats", *ports, "--temp-dir", tmp],
                            env=env, start_new_session=True, stdout=open(Path(tmp) / "head.log", "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 300
        while True:  # up when the job server takes a job: its agent registers seconds after the dashboard
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                probe = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", url, "--", "true"], env=env,
                                       capture_output=True, text=True, timeout=120)
                if probe.returncode == 0:
                    break
            except OSError:
                pass
            assert head.poll() is None and time.time() < deadline, \
                f"the Ray head did not start; `ray start` said: {(Path(tmp) / 'head.log').read_text()[-2000:]}"
            time.sleep(1)
        yield {"gcs": f"127.0.0.1:{gcs}", "dashboard": url, "env": env}
    finally:
        # this cluster's processes (its temp dir is in their command lines) and nothing else, also when
        # it failed to start; a graceful stop takes half a minute and there is nothing to save
        for kill, pid in [(os.kill, int(p)) for p in subprocess.run(["pgrep", "-f", tmp], capture_output=True,
                                                                      text=True).stdout.split()] + [(os.killpg, head.pid)]:
            try:
                kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        head.wait(60)


def outcome(out: Path) -> dict:
    rows = [r for sub in ("kept", "rejected") if (out / sub).exists()
            for r in pads.dataset(str(out / sub)).to_table(columns=["path", "status", "reason"]).to_pylist()]
    return {Path(r["path"]).stem: (r["status"], r["reason"]) for r in rows}


def test_job_submit_and_ray_address_curate_like_the_embedded_run(ray_head, sample_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stages: []\nprogress: false\n")   # the cheap filters: EXPECTED is the embedded result
    args = ["curate", "--source", f"folder={sample_dir}", "--config", str(cfg), "--quiet"]
    job = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"], "--working-dir", ".",
                          "--", "infu", *args, "--out", str(tmp_path / "job")],
                         cwd=ROOT, env=ray_head["env"], capture_output=True, text=True, timeout=600)
    assert job.returncode == 0 and "succeeded" in job.stdout + job.stderr, (job.stdout + job.stderr)[-4000:]
    assert "accounting: every input kept, rejected or quarantined: yes" in job.stdout + job.stderr
    joined = subprocess.run([str(BIN / "infu"), *args, "--out", str(tmp_path / "joined"),
                             "--ray-address", ray_head["gcs"]],
                            cwd=tmp_path, env=ray_head["env"], capture_output=True, text=True, timeout=600)
    assert joined.returncode == 0, (joined.stdout + joined.stderr)[-4000:]
    assert f"logs: {tmp_path / 'joined' / '_work' / 'logs' / 'curate.log'}" in joined.stderr
    assert outcome(tmp_path / "job") == outcome(tmp_path / "joined") == EXPECTED


def test_ray_gives_each_actor_of_a_resolved_pool_its_gpu(ray_head):
    """A 0.5-GPU pool on two GPUs gets four actors, two per GPU, each seeing its own GPU in
    CUDA_VISIBLE_DEVICES (what torch and onnxruntime then use)."""
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "gpu_probe.py"), ray_head["gcs"]], capture_output=True,
                         text=True, timeout=300, env=ray_head["env"], cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "actor pools: probe 4 x (0.25 CPU, 0.5 GPU)" in out.stdout
    got = json.loads(out.stdout.strip().splitlines()[-1])
    actors = {(s["pid"], tuple(s["gpu_ids"]), s["visible"]) for s in got["seen"]}
    assert len(got["seen"]) == 16 and len(actors) == 4
    assert sorted(gpu for _, (gpu,), _ in actors) == ["0", "0", "1", "1"]
    assert all(visible == gpu for _, (gpu,), visible in actors)


def test_doctor_reports_the_clusters_resources(ray_head):
    """`infu doctor --ray-address` joins (never starts) the cluster and says what it offers."""
    out = subprocess.run([str(BIN / "infu"), "doctor", "--ray-address", ray_head["gcs"]], capture_output=True,
                         text=True, timeout=300, env=ray_head["env"], cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("ray "))
    assert f"{ray_head['gcs']}: 1 node(s), 2 CPUs" in line and "2 GPUs (2 free)" in line, line


def test_each_node_gets_a_jobs_models_once_a_late_one_too_with_the_drivers_token(ray_head, hub, published,
                                                                                   tmp_path):
    """A job's driver makes its models ready in its cache (FLUX.1-dev, and a gated repo its HF_TOKEN
    opens), then the head node pulls them once into its own. A second raylet with a cache of its own
    joins while the job runs: an actor there fetches what its node lacks, once, with the driver's
    token (which is in no runtime_env, where the dashboard would show it). A second job fetches
    nothing anywhere."""
    from collections import Counter

    from hub_server import Repo
    from test_models import FLUX, fetched

    hub.repos["gated-org/licensed"] = Repo({"config.json": b"{}", "model.safetensors": b"w" * 20_000}, gated=True,
                                           token="hf_driver_secret")
    driver = ("import json, sys, ray\n"
              "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy\n"
              "from infu_model.hub import DIFFUSERS, FOLDER, ModelRef, Need, resolve\n"
              "from pipelines.models import fetch_models\n"
              "from pipelines.ray_runtime import init_ray\n"
              f"fetch_models([Need(ModelRef.parse('hf://{FLUX}'), DIFFUSERS), "
              "Need(ModelRef.parse('hf://gated-org/licensed'), FOLDER)])\n"
              "init_ray(sys.argv[1])\n"
              "first = {n['NodeID'] for n in ray.nodes() if n['Alive']}\n"
              "print(len(first), flush=True)\n"
              "if sys.stdin.readline().strip() == 'joined':\n"
              "    late = next(n['NodeID'] for n in ray.nodes() if n['Alive'] and n['NodeID'] not in first)\n"
              "    @ray.remote(num_cpus=0)\n"
              "    class Loader:\n"
              "        def __init__(self):\n"
              f"            self.paths = [str(resolve('hf://{FLUX}', DIFFUSERS)), "
              "str(resolve('hf://gated-org/licensed', FOLDER))]\n"
              "        def seen(self):\n"
              "            return self.paths, json.dumps(ray.get_runtime_context().runtime_env)\n"
              "    a = Loader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(late, soft=False)).remote()\n"
              "    print(json.dumps(ray.get(a.seen.remote())), flush=True)\n")
    env = {**hub.env, "RAY_AUTH_MODE": "disabled", "HF_HOME": str(tmp_path / "driver"),
           "HF_TOKEN": "hf_driver_secret"}
    node = None
    try:
        job = subprocess.Popen([sys.executable, "-c", driver, ray_head["gcs"]], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert job.stdout.readline().strip() == "1", job.stderr.read()[-3000:]
        counts = Counter(fetched(hub))
        assert counts and set(counts.values()) == {2}, counts   # the driver and the head node
        node = join_node(ray_head, 1, {**ray_head["env"], "HF_HOME": str(tmp_path / "node-b")})
        out, err = job.communicate("joined\n", timeout=300)
        assert job.returncode == 0, err[-3000:]
        (flux, gated), runtime_env = json.loads(out.strip().splitlines()[-1])
        assert flux.startswith(str(tmp_path / "node-b")) and gated.startswith(str(tmp_path / "node-b"))
        assert "hf_driver_secret" not in runtime_env
        counts = Counter(fetched(hub))
        assert set(counts.values()) == {3}, counts   # and the late node, once
        second = subprocess.run([sys.executable, "-c", driver, ray_head["gcs"]], input="done\n", capture_output=True,
                                text=True, env=env, cwd=ROOT, timeout=300)
        assert second.returncode == 0 and second.stdout.strip() == "2", second.stderr[-3000:]
        assert Counter(fetched(hub)) == counts, "a second job fetched again"
    finally:
        if node is not None:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(60)


def join_node(ray_head, cpus: int, env=None) -> subprocess.Popen:
    """A second raylet on this machine joining ``ray_head``'s cluster with ``cpus`` CPUs, up when the
    cluster lists it alive (by its node manager's port: a node killed just before may still count)."""
    port = free_port()

    def joined() -> bool:
        out = subprocess.run([sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], "
                              "logging_level='ERROR'); print([n['NodeManagerPort'] for n in ray.nodes() if n['Alive']])",
                              ray_head["gcs"]], capture_output=True, text=True, env=ray_head["env"], timeout=120)
        return out.returncode == 0 and any(ln.startswith("[") and str(port) in ln for ln in out.stdout.splitlines())

    ports = [f"--{p}-port={free_port()}" for p in ("dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                                                   "runtime-env-agent", "object-manager")]
    # its own address on the loopback: a driver on this machine attaches to the head's raylet, never to this one
    node = subprocess.Popen([str(BIN / "ray"), "start", "--address", ray_head["gcs"], "--block", "--num-cpus",
                             str(cpus), "--disable-usage-stats", "--node-ip-address", "127.0.0.2",
                             f"--node-manager-port={port}", *ports],
                            env=env or ray_head["env"], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not joined():
        assert node.poll() is None and time.time() < deadline, "the node did not join"
        time.sleep(1)
    return node


def test_training_survives_a_lost_node_and_ends_with_the_uninterrupted_weights(ray_head, tmp_path):
    """Two training workers, one per node (2 CPUs each), ray.max_failures 1. The second node is killed
    (kill -9: its raylet and workers) after the step-2 checkpoint: the run names the worker it lost and
    where, says it waits for resources, and once a node joins again Ray Train restarts both workers from
    the last checkpoint by itself. The next node lost, once the restarted workers saved a checkpoint, uses up the retries: one line, exit
    1, and the same command resumes from the last checkpoint Ray Train recorded. The final weights are an uninterrupted
    run's (one worker, the same global batches)."""
    import contextlib
    import re

    import yaml

    from infu_model.tiny import make_tiny
    from curation.engine import plain
    from pipelines.train import train_loop
    from test_interrupts import _Factory
    from test_train_job import _cfg, _relative_gap, _weights, spss

    models, data = {"base": make_tiny(tmp_path / "tiny")["base"]}, spss.__wrapped__(_Factory(tmp_path))
    kw = dict(loader="plan", global_batch_size=4, checkpoint_every=2)
    train_loop(_cfg(models, data, tmp_path / "one", 16, **kw))
    out = tmp_path / "two"
    cfg = tmp_path / "s1.yaml"
    cfg.write_text(yaml.safe_dump(plain(_cfg(models, data, out, 16, ray={"num_workers": 2, "cpus_per_worker": 2,
                                                                          "max_failures": 1}, **kw))))
    cmd = [str(BIN / "infu"), "train", "--config", str(cfg), "--ray-address", ray_head["gcs"]]
    said, nodes = tmp_path / "said.txt", [join_node(ray_head, 2)]

    def until(done, run, deadline):
        while not done():
            assert run.poll() is None and time.time() < deadline, said.read_text()[-3000:]
            time.sleep(0.2)

    try:
        with open(said, "w") as f:
            run = subprocess.Popen(cmd, cwd=tmp_path, env=ray_head["env"], stdout=f, stderr=subprocess.STDOUT)
            deadline = time.time() + 400
            until(lambda: (out / "checkpoints" / "step-00000002").is_dir(), run, deadline)
            os.killpg(nodes[-1].pid, signal.SIGKILL)  # the node and every worker it ran
            until(lambda: "waiting for resources" in said.read_text(), run, deadline)
            nodes.append(join_node(ray_head, 2))
            # the restarted workers train (a step after the restart line), then save a checkpoint of their own
            until(lambda: "train: step" in said.read_text().split("train: lost", 1)[-1], run, deadline)
            saved = set((out / "checkpoints").glob("step-????????"))
            until(lambda: set((out / "checkpoints").glob("step-????????")) - saved, run, deadline)
            os.killpg(nodes[-1].pid, signal.SIGKILL)  # the second loss: more than max_failures allows
            assert run.wait(300) == 1, said.read_text()[-3000:]
        first = said.read_text()
        nodes.append(join_node(ray_head, 2))
        again = subprocess.run(cmd, cwd=tmp_path, env=ray_head["env"], capture_output=True, text=True, timeout=400)
        assert again.returncode == 0, again.stderr[-3000:]
    finally:
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(60)
    lines = first.splitlines()
    lost = [i for i, ln in enumerate(lines) if ln.startswith("train: lost")]
    assert len(lost) == 1, first[-3000:]
    restart = re.search(r"worker \d on 127\.0\.0\.2( \(its node died\))?; .* from step-(\d{8}) ", lines[lost[0]])
    after = [int(m.group(1)) for ln in lines[lost[0]:] if (m := re.match(r"train: step (\d+)/16", ln))]
    assert restart and after and after[0] == int(restart.group(2)) + 1, first[-3000:]  # it restarted where it said
    end = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(end) == 1 and "Traceback" not in first and "(raylet)" not in first, first[-3000:]
    assert end[0].startswith("Error: train: stopped at step ") and "on 127.0.0.2" in end[0], end
    resume = re.search(r"rerun the same command to resume from step-(\d{8})$", end[0])
    steps = [int(m) for m in re.findall(r"train: step (\d+)/16", again.stderr)]
    assert resume and steps and min(steps) == int(resume.group(1)) + 1 and max(steps) == 16, (end, steps)
    assert _relative_gap(_weights(tmp_path / "one" / "final"), _weights(out / "final")) < 1e-5
