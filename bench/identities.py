"""`infu identities` at dataset scale on this machine (#50): the whole job (read, index, search on Ray,
cluster, write) over N 512-d embeddings in a curated output's layout, with each faiss index kind.

The embeddings are drawn, not computed (a face model on 100k photos would take hours here and
measure the face model): each identity is a random direction, each photo of it that direction plus
noise, so that two photos of one person have cosine about 0.72 and of two people about 0, as ArcFace
embeddings do. What is timed is the clustering, which sees only vectors.

    python bench/identities.py --faces 100000 [--per-identity 10] [--kinds flat ivf ivfpq]

Prints each kind's wall time and phases (stats.json's timings), and purity / inverse purity
against the drawn identities.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.registry import spss_schema  # noqa: E402
from pipelines.identities import COLUMNS, agreement  # noqa: E402


def drawn(root: Path, n: int, per_identity: int, d: int = 512, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    people = n // per_identity
    centres = rng.normal(size=(people, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    who = np.repeat(np.arange(people), per_identity)
    v = centres[who] + 0.62 * rng.normal(size=(len(who), d)).astype(np.float32) / np.sqrt(d)
    kept = root / "curated" / "kept"
    kept.mkdir(parents=True)
    schema = pa.schema([spss_schema().field(c) for c in COLUMNS])
    step = 20000
    for i in range(0, len(who), step):
        rows = pa.table({"id": [f"r{k:08d}" for k in range(i, min(i + step, len(who)))],
                         "source": ["bench"] * len(who[i:i + step]),
                         "identity": [f"p{p}" for p in who[i:i + step]],
                         "id_embedding": pa.array(list(v[i:i + step]), pa.list_(pa.float32())),
                         "id_backend": ["arcface_ir_se50"] * len(who[i:i + step])})
        pq.write_table(rows.cast(schema), kept / f"part-{i // step:04d}.parquet")
    return kept.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=100000)
    ap.add_argument("--per-identity", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivf", "ivfpq"])
    ap.add_argument("--shard-rows", type=int, default=25000, help="queries per Ray task")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(tempfile.mkdtemp(prefix="bench-identities-"))
    t = time.perf_counter()
    curated = drawn(work, args.faces, args.per_identity)
    print(f"{args.faces} embeddings drawn and written in {time.perf_counter() - t:.1f} s")
    from pipelines.jobs import load_config
    from pipelines.identities import run_identities

    for kind in args.kinds:
        cfg = load_config("identities", overrides={"progress": False, "labels": "report", "shard_rows": args.shard_rows,
                                                   "index": {"kind": kind}})
        t = time.perf_counter()
        stats = run_identities(curated, work / kind, cfg, log=lambda m: None)
        wall = time.perf_counter() - t
        faces = pq.read_table(work / kind / "faces.parquet", columns=["identity", "label"])
        got = agreement(np.unique(faces["identity"].to_numpy(zero_copy_only=False), return_inverse=True)[1],
                        ["bench"] * faces.num_rows, faces["label"].to_pylist())
        print(f"  {kind:<6} {wall:6.1f} s  " + "  ".join(f"{k} {v:.1f}" for k, v in stats["timings_s"].items())
              + f"  identities {stats['identities']} (drawn {args.faces // args.per_identity})  purity "
              f"{got['purity']:.4f}  inverse purity {got['inverse_purity']:.4f}", flush=True)
    print(json.dumps({"faces": args.faces, "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
