"""``infu identities``: the faces of a curated output clustered into identities across the whole
dataset, and from them real cross-photo training pairs (#50).

Every record's face embedding (``id_embedding``, from the faces stage) goes into a faiss index
(exact up to ``index.flat_max`` faces, inverted lists beyond, quantised past ``index.ivf_max``); each face's ``neighbours`` nearest
faces are found by Ray tasks, one shard of queries each; two faces closer than the same-person
rule of their embedding's backend (``same_person``) are linked, and the connected components of
that graph are the identities. A dataset's own labels (the ``identity`` column: CelebA's and
VGGFace2's identity ids, a folder per person...) are measured against the clusters the
embeddings alone make (purity, inverse purity, pairwise precision and recall), then, with
``labels: trust``, merged into them. Every input row is accounted for: clustered, or counted as
without an embedding.

The output folder: ``faces.parquet`` (one row per input record: its identity, or none and why),
``identities.parquet`` (one row per identity: its members, sources and majority label),
``pairs.parquet`` (for each face, up to ``pairs.per_face`` other photos of the same person, the
nearest first, near-duplicates of the same photo left out: references for training beside the
synthetic SPMS pairs), and ``stats.json`` (written last: the run is done).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.engine import between
from infu_model.storage import as_path, write_parquet
from pipelines.config import JobConfig
from pipelines.job import (RayOptions, SourceSpec, check_inputs, input_files, job_run, parquet_files, read_column,
                           start_run, write_json)

COLUMNS = ["id", "source", "identity", "id_embedding", "id_backend"]
FACES_SCHEMA = pa.schema([
    ("id", pa.string()), ("face", pa.int32()),                              # the record, which of its faces
    ("source", pa.string()), ("label", pa.string()),                        # its dataset, the dataset's own label
    ("identity", pa.string()), ("identity_size", pa.int32()),              # the identity found (null: see reason)
    ("reason", pa.string())])                                              # why none: no_embedding
IDENTITIES_SCHEMA = pa.schema([
    ("identity", pa.string()), ("size", pa.int32()), ("ids", pa.list_(pa.string())), ("faces", pa.list_(pa.int32())),
    ("sources", pa.list_(pa.string())), ("label", pa.string()), ("label_share", pa.float32())])
PAIRS_SCHEMA = pa.schema([
    ("id", pa.string()), ("face", pa.int32()), ("reference_id", pa.string()), ("reference_face", pa.int32()),
    ("identity", pa.string()),
    ("similarity", pa.float32()), ("distance", pa.float32())])   # cosine and euclidean distance of the embeddings


@dataclass(frozen=True)
class SamePerson:
    """When two faces are one person, by how their backend's embeddings compare."""
    min_cosine: float = between(-1, 1)   # cosine backends (ArcFace): at least this similar
    max_distance: float = between(0)     # euclidean backends (dlib): at most this far


@dataclass(frozen=True)
class IndexOptions:
    """The nearest-neighbour index (faiss)."""
    kind: Literal["auto", "flat", "ivf", "ivfpq"]   # auto: flat up to flat_max faces, ivf up to ivf_max, ivfpq beyond
    flat_max: int = between(1)                      # exact search up to this many faces
    ivf_max: int = between(1)                       # full vectors in the index up to this many (4 bytes x dims each)
    nlist: int | None = between(1)                  # inverted lists (null: 4 x sqrt(faces))
    nprobe: int = between(1)                        # lists searched per query
    pq_bytes: int = between(1)                      # ivfpq: bytes per stored face (a divisor of the dimension)


@dataclass(frozen=True)
class PairOptions:
    """Real cross-photo pairs: other photos of the same person as a face's references."""
    per_face: int = between(0)               # references per face (0: no pairs.parquet rows)
    max_cosine: float = between(-1, 1)       # closer than this (cosine backends) is the same photo again
    min_distance: float = between(0)         # nearer than this (euclidean backends) is the same photo again


@dataclass(frozen=True)
class IdentitiesConfig(JobConfig):
    """``configs/identities.yaml``, typed."""
    RESUMABLE = ("shard_rows",)   # how the search is cut into tasks, not what it finds
    ray: RayOptions
    progress: bool
    same_person: SamePerson
    neighbours: int = between(1, 1000)       # k of the nearest-neighbour graph
    labels: Literal["trust", "report"]       # trust: a dataset's own labels also join faces; report: only measured
    index: IndexOptions
    shard_rows: int = between(1)             # queries per Ray task
    pairs: PairOptions


# ------------------------------------------------------------------------------------ reading --
@dataclass
class Faces:
    """One entry per face of the input (a multi-ID record's every face, any other record once): its
    record's id, which face, source and label, and the embeddings of those that have one."""
    ids: list
    face: list
    sources: list
    labels: list
    has: np.ndarray          # (rows,) bool: the record has an embedding
    vectors: np.ndarray      # (faces, dim) float32, the rows with ``has``
    backend: str | None
    metric: str              # cosine | euclidean


def check_identities(in_dir, cfg: IdentitiesConfig) -> int:
    """The input's rows, its Parquet checked to hold what clustering reads; refused in one line otherwise."""
    rows = check_inputs(input_files(in_dir), COLUMNS, "infu identities")
    if not rows:
        raise ValueError(f"nothing to cluster: the Parquet in {in_dir} holds no rows")
    return rows


def read_faces(files: list[str], group_files: list[str] = ()) -> Faces:
    """The faces of single-face records (``files``) and of multi-ID records (``group_files``, curate's
    groups/: each face its own entry, without the photo's dataset label, which names no one face)."""
    from infu_model.faces import metric_of

    t = read_column(files, COLUMNS)
    g = read_column(list(group_files), ["id", "source", "faces_embedding", "id_backend"])
    backends = sorted({b for b in [*t["id_backend"].to_pylist(), *g["id_backend"].to_pylist()] if b is not None})
    if len(backends) > 1:
        raise ValueError(f"the input's embeddings come from {len(backends)} face models ({', '.join(backends)}): "
                         "embeddings of different models cannot be compared; curate with one faces backend")
    ids, face, sources, labels = t["id"].to_pylist(), [0] * t.num_rows, t["source"].to_pylist(), t["identity"].to_pylist()
    emb = t["id_embedding"].to_pylist()
    for rid, src, faces in zip(g["id"].to_pylist(), g["source"].to_pylist(), g["faces_embedding"].to_pylist()):
        for k, e in enumerate(faces or [None]):
            ids.append(rid), face.append(k), sources.append(src), labels.append(None), emb.append(e)
    has = np.array([e is not None and len(e) > 0 for e in emb], bool)
    vectors = np.asarray([e for e, h in zip(emb, has) if h] or np.zeros((0, 0)), np.float32)
    backend = backends[0] if backends else None
    return Faces(ids, face, sources, labels, has, vectors, backend, metric_of(backend) if backend else "cosine")


# ------------------------------------------------------------------------------- neighbours --
def prepared(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Vectors as the index compares them: unit length for cosine (inner product), as they are for euclidean."""
    v = np.ascontiguousarray(vectors, np.float32)
    if metric == "cosine":
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v


def build_index(v: np.ndarray, metric: str, opts: IndexOptions):
    """A faiss index over ``v``: flat (exact), IVF-Flat or IVF-PQ (trained on the faces themselves)."""
    import faiss

    n, d = v.shape
    kind = opts.kind if opts.kind != "auto" else ("flat" if n <= opts.flat_max else "ivf" if n <= opts.ivf_max
                                                  else "ivfpq")
    ip = metric == "cosine"
    flat = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
    if kind == "flat":
        flat.add(v)
        return flat, kind
    nlist = min(opts.nlist or int(4 * np.sqrt(n)), max(1, n // 39))  # faiss wants ~39 training points a list
    how = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
    if kind == "ivf":
        index = faiss.IndexIVFFlat(flat, d, nlist, how)
    else:
        if d % opts.pq_bytes:
            raise ValueError(f"index.pq_bytes: {opts.pq_bytes} does not divide the embedding's {d} dimensions")
        index = faiss.IndexIVFPQ(flat, d, nlist, opts.pq_bytes, 8, how)
    index.train(v)
    index.add(v)
    index.nprobe = min(opts.nprobe, nlist)
    return index, kind


def _search(index_bytes: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(1)  # one core per task: Ray runs as many tasks as it has CPUs
    return faiss.deserialize_index(index_bytes).search(queries, k)


def neighbours(v: np.ndarray, index, k: int, shard_rows: int, ray_address, ray_opts, log) -> tuple:
    """Each face's ``k`` nearest faces (itself included): (scores, indices), on Ray when there is more than
    one shard of queries."""
    k = min(k, len(v))
    shards = [v[i:i + shard_rows] for i in range(0, len(v), shard_rows)]
    if len(shards) <= 1:
        return index.search(v, k)
    import faiss
    import ray

    from pipelines.ray_runtime import init_ray

    init_ray(ray_address, ray_opts)
    log(f"identities: {len(v)} faces searched in {len(shards)} Ray tasks")
    shared = ray.put(faiss.serialize_index(index))
    search = ray.remote(num_cpus=1)(_search)
    found = ray.get([search.remote(shared, s, k) for s in shards])
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


# -------------------------------------------------------------------------------- clustering --
def close(scores: np.ndarray, metric: str, rule: SamePerson) -> np.ndarray:
    """Which neighbour scores say "the same person" (faiss: inner products, or squared L2 distances)."""
    return scores >= rule.min_cosine if metric == "cosine" else scores <= rule.max_distance ** 2


def components(n: int, links: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The connected component of each of ``n`` faces in the graph of ``links`` (pairs of index arrays)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([a for a, _ in links] or [np.zeros(0, int)])
    cols = np.concatenate([b for _, b in links] or [np.zeros(0, int)])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=True, connection="weak")[1]


def knn_links(scores, idx, metric: str, rule: SamePerson) -> tuple[np.ndarray, np.ndarray]:
    n, k = idx.shape
    me = np.repeat(np.arange(n), k).reshape(n, k)
    keep = (idx >= 0) & (idx != me) & close(scores, metric, rule)
    return me[keep], idx[keep]


def label_links(sources: list, labels: list) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's own labels as links: each labelled face to the first of its (source, label) group."""
    first: dict = {}
    a, b = [], []
    for i, key in enumerate(zip(sources, labels)):
        if key[1] is None:
            continue
        j = first.setdefault(key, i)
        if j != i:
            a.append(i)
            b.append(j)
    return np.asarray(a, int), np.asarray(b, int)


def agreement(cluster: np.ndarray, sources: list, labels: list) -> dict | None:
    """How clusters agree with a dataset's own labels, over the labelled faces (labels are per source):
    purity (each cluster's commonest label), inverse purity (each label's commonest cluster), and the
    pairwise precision and recall of "same person"."""
    pairs = [((s, l), c) for s, l, c in zip(sources, labels, cluster) if l is not None]
    if not pairs:
        return None
    both = Counter(pairs)
    by_cluster, by_label = Counter(c for _, c in pairs), Counter(l for l, _ in pairs)

    def same(counts) -> int:
        return sum(n * (n - 1) // 2 for n in counts)

    best_label, best_cluster = Counter(), Counter()
    for (label, c), n in both.items():
        best_label[c] = max(best_label[c], n)
        best_cluster[label] = max(best_cluster[label], n)
    together = same(both.values())
    n = len(pairs)
    return {"labelled_faces": n, "labels": len(by_label), "clusters": len(by_cluster),
            "purity": round(sum(best_label.values()) / n, 4), "inverse_purity": round(sum(best_cluster.values()) / n, 4),
            "pairwise_precision": round(together / max(same(by_cluster.values()), 1), 4),
            "pairwise_recall": round(together / max(same(by_label.values()), 1), 4)}


def named(cluster: np.ndarray, keys: list) -> tuple[list[str], np.ndarray]:
    """Identity names for components: ``id-000001`` the largest, ties by their smallest member ``keys``
    ((record id, face)): the same input gives the same names; and each component's size."""
    sizes = np.bincount(cluster)
    smallest: dict = {}
    for c, key in zip(cluster, keys):
        smallest[c] = min(smallest.get(c, key), key)
    order = sorted(smallest, key=lambda c: (-sizes[c], smallest[c]))
    rank = {c: r for r, c in enumerate(order)}
    return [f"id-{rank[c] + 1:06d}" for c in cluster], sizes[cluster]


# -------------------------------------------------------------------------------------- pairs --
def cross_photo_pairs(v: np.ndarray, idx: np.ndarray, names: list[str], ids: list, face: list, opts: PairOptions,
                      metric: str) -> pa.Table:
    """For each face, up to ``opts.per_face`` of its nearest faces of the same identity that are another
    photo: another record, and not closer than ``max_cosine`` / ``min_distance`` (a re-encode or crop of
    the same picture)."""
    u = prepared(v, "cosine")
    rows = []
    for i in range(len(v)) if opts.per_face else ():
        found = 0
        for j in idx[i]:
            if j < 0 or ids[j] == ids[i] or names[j] != names[i]:
                continue
            sim, dist = float(u[i] @ u[j]), float(np.linalg.norm(v[i] - v[j]))
            if (sim > opts.max_cosine) if metric == "cosine" else (dist < opts.min_distance):
                continue
            rows.append({"id": ids[i], "face": face[i], "reference_id": ids[j], "reference_face": face[j],
                         "identity": names[i], "similarity": sim, "distance": dist})
            found += 1
            if found == opts.per_face:
                break
    return pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA)


# ---------------------------------------------------------------------------------- the job --
def identity_table(names: list[str], ids: list, face: list, sources: list, labels: list) -> pa.Table:
    members: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        members.setdefault(name, []).append(i)
    rows = []
    for name in sorted(members):
        m = members[name]
        votes = Counter(labels[i] for i in m if labels[i] is not None)
        label, n = votes.most_common(1)[0] if votes else (None, 0)
        rows.append({"identity": name, "size": len(m), "ids": [ids[i] for i in m], "faces": [face[i] for i in m],
                     "sources": sorted({sources[i] for i in m}), "label": label,
                     "label_share": round(n / len(m), 4) if votes else None})
    return pa.Table.from_pylist(rows, schema=IDENTITIES_SCHEMA)


@job_run("identities", check_identities)
def run_identities(in_dir, out, cfg: IdentitiesConfig, *, checked, claim, ray_address: str | None = None,
                   overwrite: bool = False, log=print) -> dict:
    """Cluster the faces of the curated output ``in_dir`` into identities, into ``out``. A rerun with the
    same settings finds the run done; one with other settings is refused unless ``overwrite``."""
    t0 = time.time()
    start_run(claim, cfg, [SourceSpec("spss", "input", str(as_path(in_dir).resolve()))], overwrite)
    out = as_path(out)
    if (out / "stats.json").is_file():  # done, with these settings
        return json.loads((out / "stats.json").read_text())
    faces = read_faces(input_files(in_dir), parquet_files(as_path(in_dir) / "groups"))
    timings, t = {}, time.time()
    scores = idx = np.zeros((0, 0))
    kind = None
    if len(faces.vectors):
        v = prepared(faces.vectors, faces.metric)
        index, kind = build_index(v, faces.metric, cfg.index)
        timings["index"] = time.time() - t
        t = time.time()
        scores, idx = neighbours(v, index, cfg.neighbours + 1, cfg.shard_rows, ray_address, cfg.ray, log)
        timings["search"] = time.time() - t
    t = time.time()
    pos = np.flatnonzero(faces.has)
    srcs = [faces.sources[i] for i in pos]
    labs = [faces.labels[i] for i in pos]
    fids = [faces.ids[i] for i in pos]
    fface = [faces.face[i] for i in pos]
    knn = knn_links(scores, idx, faces.metric, cfg.same_person) if len(pos) else (np.zeros(0, int),) * 2
    by_embedding = components(len(pos), [knn])
    measured = agreement(by_embedding, srcs, labs)
    cluster = components(len(pos), [knn, label_links(srcs, labs)]) if cfg.labels == "trust" else by_embedding
    names, sizes = named(cluster, list(zip(fids, fface))) if len(pos) else ([], np.zeros(0, int))
    timings["cluster"] = time.time() - t
    t = time.time()
    who = dict(zip(pos.tolist(), zip(names, sizes.tolist())))
    rows = pa.Table.from_pylist(
        [{"id": faces.ids[i], "face": faces.face[i], "source": faces.sources[i], "label": faces.labels[i],
          "identity": who[i][0] if i in who else None, "identity_size": who[i][1] if i in who else None,
          "reason": None if i in who else "no_embedding"} for i in range(len(faces.ids))], schema=FACES_SCHEMA)
    write_parquet(rows, out / "faces.parquet")
    table = identity_table(names, fids, fface, srcs, labs)
    write_parquet(table, out / "identities.parquet")
    pairs = cross_photo_pairs(faces.vectors, idx, names, fids, fface, cfg.pairs, faces.metric)
    write_parquet(pairs, out / "pairs.parquet")
    timings["write"] = time.time() - t
    sizes_by_identity = table["size"].to_pylist()
    named_once = pc.xor(pc.is_valid(rows["identity"]), pc.is_valid(rows["reason"]))  # an identity, or why none
    stats = {"inputs": len(faces.ids), "records": len(set(faces.ids)),
             "multi_id_records": len({i for i, k in zip(faces.ids, faces.face) if k}),
             "clustered": len(pos), "no_embedding": len(faces.ids) - len(pos),
             "adds_up": rows.num_rows == len(faces.ids) and pc.all(named_once).as_py() is not False
             and sum(sizes_by_identity) == len(pos),
             "backend": faces.backend, "metric": faces.metric, "index": kind, "neighbours": cfg.neighbours,
             "identities": len(sizes_by_identity), "singletons": sum(s == 1 for s in sizes_by_identity),
             "largest": max(sizes_by_identity, default=0), "pairs": pairs.num_rows,
             "faces_with_pairs": len(set(pairs["id"].to_pylist())), "labels": cfg.labels,
             "agreement": measured, "timings_s": {k: round(x, 2) for k, x in timings.items()},
             "elapsed_s": round(time.time() - t0, 2)}
    write_json(out / "stats.json", stats)  # last, written whole: the file that says the run is done
    return stats
