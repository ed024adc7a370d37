import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# no test reaches the internet: models come from the tests' own Hub on 127.0.0.1 (tests/hub_server.py), into a
# cache of the session's own; tests that serve one set HF_ENDPOINT and lift HF_HUB_OFFLINE themselves
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(__import__("tempfile").mkdtemp(prefix="infu-hf-"), "hf")
os.environ.pop("HF_HUB_CACHE", None)
# the engine's own caches on this machine (job logs of bucket outputs, local copies of objects): the session's too
os.environ["XDG_CACHE_HOME"] = __import__("tempfile").mkdtemp(prefix="infu-cache-")
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"   # the discard port: a request that slips through fails at once
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray Train's controller looks at its workers every 2 s: each run waits that long to see them start and
# again to see them finish. The tests' runs are seconds long, so they look 10x as often
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Ray's workers import what a test names in a config (a post-processing hook) from here, as a user's would
# from their own PYTHONPATH
_TESTS = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    from curation.samples import write_sample_set

    root = tmp_path_factory.mktemp("sample")
    write_sample_set(root)
    return root


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole test session (starting one costs seconds)."""
    import ray

    from pipelines.ray_runtime import init_ray

    from pipelines.job import RayOptions

    init_ray(None, RayOptions(num_cpus=2, object_store_memory=400_000_000, reserve_per_operator=False))
    yield ray
    ray.shutdown()


@pytest.fixture()
def curate_cfg():
    from pipelines.jobs import load_config

    return load_config("curate", overrides={"progress": False, "listing": {"shard_rows": 7},
                                            "output": {"rows_per_file": 4}})


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server on 127.0.0.1 (tests/s3_server.py), one per test module."""
    from s3_server import S3Server

    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The server, and this process's environment pointed at it (a test that reads or writes the bucket itself)."""
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    return s3
