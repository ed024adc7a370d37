"""Near-duplicate removal over a whole run, by perceptual hash and Hamming distance.

Scalable without comparing all pairs: the block-permutation scheme of Manku et
al. ("Detecting near-duplicates for web crawling", WWW 2007). Split the 64-bit
hash into ``blocks`` blocks; two hashes within distance ``k`` agree exactly on at
least ``blocks - k`` of them. For every choice of ``blocks - k`` blocks we sort the
hashes by those bits and only compare neighbours that share them, so the work
grows with N log N times C(blocks, blocks - k) tables, not N^2. Every pair within
``k`` is found (no misses, unlike exact-hash or single-band matching).

Which copy survives is deterministic: rows are ranked by the cleanest copy first
(``KEEP_RULE``: least watermark evidence, then least NSFW evidence, then pixel count,
then sharpness, then id); walking that ranking, a row is a duplicate of the
best-ranked already-kept row within ``k`` of it, otherwise it is kept.

A score is evidence only in steps of ``evidence_step``: scores are compared by
``floor(score / evidence_step)``, so a faint mark under the threshold (0.15-0.46)
still loses to its clean original (0.0) whatever sharpness its edges add, while
noise far below any threshold (an original that reads 0.037 somewhere in the photo
against its re-encode's 0.0) decides nothing and the larger original is kept.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def hex_to_u64(hexes: list[str] | pa.Array) -> np.ndarray:
    if isinstance(hexes, (pa.Array, pa.ChunkedArray)):
        hexes = hexes.to_pylist()
    if not hexes:
        return np.zeros(0, dtype=np.uint64)
    return np.frombuffer(bytes.fromhex("".join(h.rjust(16, "0") for h in hexes)), dtype=">u8").astype(np.uint64)


def _block_masks(blocks: int) -> list[int]:
    edges = np.linspace(0, 64, blocks + 1).round().astype(int)
    return [((1 << int(b - a)) - 1) << int(a) for a, b in zip(edges[:-1], edges[1:])]


def near_pairs(hashes: np.ndarray, k: int, blocks: int = 8) -> np.ndarray:
    """All index pairs (i < j) of distinct ``hashes`` within Hamming distance ``k``."""
    n = len(hashes)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if k <= 0:
        return np.zeros((0, 2), dtype=np.int64)  # distinct hashes differ in >= 1 bit
    if blocks <= k:
        raise ValueError(f"dedup blocks ({blocks}) must exceed the Hamming threshold ({k})")
    masks = _block_masks(blocks)
    found = []
    for chosen in combinations(masks, blocks - k):
        mask = np.uint64(sum(chosen))
        key = hashes & mask
        order = np.argsort(key, kind="stable")
        ks, hs = key[order], hashes[order]
        d = 1
        while d < n:
            same = ks[:-d] == ks[d:]
            if not same.any():
                break
            close = same & (np.bitwise_count(hs[:-d] ^ hs[d:]) <= k)
            i = np.nonzero(close)[0]
            if len(i):
                a, b = order[i], order[i + d]
                found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
            d += 1
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


# the copy that survives a group of near duplicates: (column, order) best first; then the smaller id.
# A column a run lacks (its stage did not run) or a null in it decides nothing
KEEP_RULE = (("watermark", "ascending"), ("watermark_classifier", "ascending"), ("nsfw", "ascending"),
             ("pixels", "descending"), ("blur", "descending"))
EVIDENCE = ("watermark", "watermark_classifier", "nsfw")   # probabilities, compared in steps (see above)


def find_duplicates(table: pa.Table, k: int, blocks: int = 8, prefer=KEEP_RULE, evidence_step: float = 0.1) -> pa.Table:
    """``table`` has id, phash and the ``prefer`` columns (``pixels`` may come as width and height).
    Returns (id, duplicate_of) for every duplicate."""
    if table.num_rows == 0:
        return pa.table({"id": pa.array([], pa.string()), "duplicate_of": pa.array([], pa.string())})
    ranked = table
    if "pixels" not in table.column_names and {"width", "height"} <= set(table.column_names):
        pixels = pc.multiply(pc.cast(table["width"], pa.int64()), pc.cast(table["height"], pa.int64()))
        ranked = table.append_column("pixels", pixels)
    for c in EVIDENCE:
        if c in ranked.column_names and evidence_step > 0:
            step = pc.floor(pc.divide(pc.cast(ranked[c], pa.float64()), evidence_step))
            ranked = ranked.set_column(ranked.schema.get_field_index(c), c, step)
    keys = [(c, o) for c, o in prefer if c in ranked.column_names] + [("id", "ascending")]
    ranked = ranked.take(pc.sort_indices(ranked, sort_keys=keys, null_placement="at_end"))
    ids = ranked["id"].to_pylist()
    hashes = hex_to_u64(ranked["phash"])
    uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    # the best-ranked row of each distinct hash speaks for it (rows are in rank order)
    rep_rank = first  # np.unique's first occurrence = lowest rank index = best row
    pairs = near_pairs(uniq, k, blocks)
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    keeper = np.full(len(uniq), -1, dtype=np.int64)  # row index that each distinct hash maps to
    for u in np.argsort(rep_rank, kind="stable").tolist():
        better = [keeper[v] for v in neighbours.get(u, ()) if keeper[v] >= 0 and keeper[v] == rep_rank[v]]
        keeper[u] = min(better) if better else rep_rank[u]
    dup_rows = [i for i in range(len(ids)) if keeper[inverse[i]] != i]
    return pa.table({"id": pa.array([ids[i] for i in dup_rows], pa.string()),
                     "duplicate_of": pa.array([ids[keeper[inverse[i]]] for i in dup_rows], pa.string())})
