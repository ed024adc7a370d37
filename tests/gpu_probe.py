"""A stage that records which GPU Ray gave its actor, run against a Ray cluster that declares
GPUs it does not have (``python tests/gpu_probe.py ADDRESS``: prints the log and one JSON line)."""
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.engine import Resources, Stage, plain  # noqa: E402


@dataclass(frozen=True)
class ProbeOptions:
    device: str
    barrier: str   # a folder where each actor signs in; none works until the whole pool has
    actors: int


class GpuProbe(Stage):
    name = "probe"
    gpu_share = 0.5
    Options = ProbeOptions

    def process(self, rows: list[dict]) -> None:
        import time

        import ray

        # every actor of the pool gets blocks, however loaded the machine: each signs in, then waits
        # (a minute at most) until all have, so the first ones cannot take every block
        Path(self.opts.barrier, str(os.getpid())).touch()
        deadline = time.time() + 60
        while len(os.listdir(self.opts.barrier)) < self.opts.actors and time.time() < deadline:
            time.sleep(0.05)

        for r in rows:
            r["id_backend"] = json.dumps({"gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                                          "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()})


def main() -> None:
    import pyarrow as pa
    import ray

    from curation.engine import ALIVE
    from curation.registry import empty_row
    from curation.registry import spss_schema
    from pipelines.ray_stages import add_stage, plan_pools

    ray.init(address=sys.argv[1], log_to_driver=False)
    rows = [{**empty_row(), "id": str(i), "source": "t", "path": str(i), "frame": -1, "status": ALIVE} for i in range(16)]
    import tempfile

    barrier = tempfile.mkdtemp(prefix="probe")
    [probe] = plan_pools([GpuProbe(ProbeOptions("cuda", barrier, 4), Resources(num_cpus=0.25, batch_size=1))],
                         reads=0.25)
    ds = ray.data.from_arrow(pa.Table.from_pylist(rows, schema=spss_schema(transient_too=True))).repartition(8)
    ds = add_stage(ds, probe, spss_schema(transient_too=True))
    seen = [json.loads(r["id_backend"]) for r in ds.select_columns(["id_backend"]).take_all()]
    print(json.dumps({"resources": plain(probe.resources), "seen": seen}))


if __name__ == "__main__":
    main()
