"""Near-duplicate search and aspect-ratio buckets."""
import numpy as np
import pyarrow as pa
import pytest

from curation.buckets import assign_bucket, make_buckets
from curation.dedup import find_duplicates, near_pairs
from pipelines.jobs import load_config


def _brute(h, k):
    return {(i, j) for i in range(len(h)) for j in range(i + 1, len(h))
            if bin(int(h[i]) ^ int(h[j])).count("1") <= k}


@pytest.mark.parametrize("k,blocks", [(1, 4), (3, 6), (4, 8), (6, 8)])
def test_block_scheme_finds_exactly_the_brute_force_pairs(k, blocks):
    rng = np.random.default_rng(k)
    base = rng.integers(0, 2**63, size=300, dtype=np.int64).astype(np.uint64)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, size=rng.integers(1, k + 3), replace=False)))
             for _ in range(120)]
    near = np.array([base[i] ^ f for i, f in enumerate(flips)], dtype=np.uint64)
    h = np.unique(np.concatenate([base, near]))
    assert {tuple(p) for p in near_pairs(h, k, blocks).tolist()} == _brute(h, k)


def _table(rows):
    ids, ph, w, hgt = zip(*rows)
    return pa.table({"id": list(ids), "phash": list(ph), "width": list(w), "height": list(hgt),
                     "blur": [100.0] * len(rows)})


def test_the_larger_copy_is_kept_whatever_the_order():
    rows = [("small", "c2924c5532bddfc8", 300, 300), ("big", "c2924c5532bddfc9", 512, 512),
            ("other", "9d8a745883d71ea5", 512, 600)]
    for order in (rows, rows[::-1]):
        d = find_duplicates(_table(order), k=4)
        assert d.to_pylist() == [{"id": "small", "duplicate_of": "big"}]


def test_exact_copies_and_ties_break_by_id():
    rows = [("b", "c2924c5532bddfc8", 512, 512), ("a", "c2924c5532bddfc8", 512, 512)]
    assert find_duplicates(_table(rows), k=2).to_pylist() == [{"id": "b", "duplicate_of": "a"}]


@pytest.mark.parametrize("scores,sizes,kept", [
    ((0.037, 0.0), (1024, 900), "a"),    # noise far under any threshold: the larger original is kept
    ((0.0, 0.09), (900, 1024), "b"),     # the same step: pixels decide
    ((0.0, 0.2), (900, 1024), "a"),      # a faint mark a step up: the clean, smaller copy is kept
    ((0.45, 0.0), (1024, 900), "b"),
    ((None, 0.0), (1024, 900), "b"),     # unscored (the stage failed on it) ranks last
])
def test_watermark_scores_decide_which_copy_is_kept_only_when_they_differ_by_a_step(scores, sizes, kept):
    t = pa.table({"id": ["a", "b"], "phash": ["c2924c5532bddfc8", "c2924c5532bddfc9"], "width": list(sizes),
                  "height": list(sizes), "blur": [100.0, 100.0], "watermark": pa.array(scores, pa.float32())})
    lost = "b" if kept == "a" else "a"
    assert find_duplicates(t, k=4, evidence_step=0.1).to_pylist() == [{"id": lost, "duplicate_of": kept}]


def test_chains_do_not_remove_distant_images():
    # x ~ y (3 bits), y ~ z (3 bits), x and z 6 bits apart: keep x, drop y, keep z
    x = 0
    y = x ^ 0b111
    z = y ^ (0b111 << 10)
    rows = [("x", f"{x:016x}", 900, 900), ("y", f"{y:016x}", 800, 800), ("z", f"{z:016x}", 700, 700)]
    assert find_duplicates(_table(rows), k=4).to_pylist() == [{"id": "y", "duplicate_of": "x"}]


def test_buckets_follow_the_paper_scheme_and_config():
    cfg = load_config("curate")
    assert list(cfg.buckets) == make_buckets()
    b = make_buckets()
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 1024 * 1024 for w, h in b)
    assert assign_bucket(864, 1152, b) == (896, 1152)  # InfU's default 3:4 portrait
    assert assign_bucket(1000, 1000, b) == (1024, 1024)
    assert assign_bucket(1920, 1080, b) == (1344, 768)


def test_the_run_keeps_the_clean_copy_of_a_near_duplicate_pair_whose_watermark_scores_differ(tmp_path):
    """Pipeline level (dedup_and_finalize over a run's candidates): of two near-duplicate photos the one
    with the visible mark (scored 0.42, under the filter's threshold, and larger and sharper) is the
    duplicate and the clean one is kept; every candidate ends in kept/ or rejected/."""
    import pyarrow as pa

    from curation.engine import ALIVE
    from curation.registry import spss_schema
    from pipelines.job import DedupOptions, Layout, parquet_files, read_column
    from pipelines.sink import Lease, write_atomic
    from test_boundaries import spss_rows

    lay = Layout(tmp_path / "out")
    lay.lease = Lease.take(lay.lease_file)
    clean, marked, other = spss_rows(3)
    for row, (wm, w, blur, ph) in zip((clean, marked, other), ((0.0, 900, 80.0, "f0f0f0f0f0f0f0f0"),
                                                                (0.42, 1024, 140.0, "f0f0f0f0f0f0f0f1"),
                                                                (0.0, 800, 90.0, "0f0f0f0f0f0f0f0f"))):
        row.update(status=ALIVE, watermark=wm, width=w, height=w, blur=blur, phash=ph)
    write_atomic(pa.Table.from_pylist([clean, marked, other], schema=spss_schema()), lay.candidates / "part-0.parquet")
    from pipelines.job import dedup_and_finalize

    dedup_and_finalize(lay, DedupOptions(True, 4, 8), False, spss_schema())
    kept = read_column(parquet_files(lay.kept), ["id"])["id"].to_pylist()
    rejected = read_column(parquet_files(lay.rejected), ["id", "reason", "duplicate_of"]).to_pylist()
    assert sorted(kept) == sorted([clean["id"], other["id"]])
    assert rejected == [{"id": marked["id"], "reason": "duplicate", "duplicate_of": clean["id"]}]
