"""`infu identities`: faces clustered into identities across a dataset, on real faces. The corpus is
the people in photos that ship in packages (the astronaut, Grace Hopper, the six of insightface's
group photo), each in several photos made by cropping, mirroring, rotating and relighting, with dlib's
embeddings as curation writes them; part of it carries a dataset's own labels."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance, ImageOps

from curation import samples
from curation.registry import spss_schema
from pipelines.jobs import load_config
from pipelines.identities import COLUMNS, agreement

PHOTOS_EACH = 7


def people() -> dict[str, Image.Image]:
    """Each person once: two portraits, and the six faces of the group photo cut out (with room around)."""
    from infu_model.faces import make_face_analyzer

    group = samples.group()
    found = make_face_analyzer({"backend": "dlib"}).detect(np.asarray(group))
    out = {"eileen": samples.astronaut(), "grace": samples.grace_hopper()}
    for k, f in enumerate(sorted(found, key=lambda f: f.bbox[0])):
        x1, y1, x2, y2 = f.bbox
        w = x2 - x1
        box = tuple(int(b) for b in (max(0, x1 - w), max(0, y1 - w), min(group.width, x2 + w), min(group.height, y2 + w)))
        out[f"t1-{k}"] = group.crop(box).resize(((box[2] - box[0]) * 2, (box[3] - box[1]) * 2))
    return out


def another_photo(im: Image.Image, rng) -> Image.Image:
    w, h = im.size
    s = rng.uniform(0.8, 1.0)
    cw, ch = int(w * s), int(h * s)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    im = im.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.3))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple:
    """A curated output's kept/ with the columns clustering reads: grace, eileen and two of the group
    labelled by their dataset ("celeba"), the rest from a folder without labels, and one record the
    faces stage found no face in. Returns (folder, each record's true person)."""
    from infu_model.faces import make_face_analyzer

    fa, rng, rows, truth = make_face_analyzer({"backend": "dlib"}), np.random.default_rng(0), [], {}
    for person, im in people().items():
        labelled = person in ("eileen", "grace", "t1-0", "t1-1")
        for j in range(PHOTOS_EACH):
            rgb = np.asarray(another_photo(im, rng))
            faces = fa.detect(rgb)
            rid = f"{person}-{j}"
            rows.append({"id": rid, "source": "celeba" if labelled else "folder",
                         "identity": f"celeb-{person}" if labelled else None,
                         "id_embedding": fa.embed(rgb, faces[0]).tolist() if faces else None,
                         "id_backend": fa.name if faces else None})
            truth[rid] = person
    rows.append({"id": "cat-0", "source": "folder", "identity": None, "id_embedding": None, "id_backend": None})
    truth["cat-0"] = None
    d = tmp_path_factory.mktemp("curated") / "kept"
    d.mkdir()
    schema = pa.schema([spss_schema().field(c) for c in COLUMNS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "part-0.parquet")
    return d.parent, truth


def cfg(**over):
    return load_config("identities", overrides={"progress": False, **over})


def run(corpus, out, **over):
    from pipelines.identities import run_identities

    return run_identities(corpus[0], out, cfg(**over), log=lambda m: None)


def test_faces_cluster_into_the_people_they_are_and_every_record_is_accounted_for(corpus, tmp_path):
    folder, truth = corpus
    stats = run(corpus, tmp_path / "out", labels="report")
    faces = pq.read_table(tmp_path / "out" / "faces.parquet").to_pylist()
    assert sorted(r["id"] for r in faces) == sorted(truth) and stats["adds_up"] and stats["inputs"] == len(truth)
    no_face = [r for r in faces if r["identity"] is None]
    assert "cat-0" in {r["id"] for r in no_face} and {r["reason"] for r in no_face} == {"no_embedding"}
    assert stats["no_embedding"] == len(no_face) and stats["clustered"] == len(truth) - len(no_face)
    assert stats["backend"] == "dlib_resnet_v1" and stats["metric"] == "euclidean" and stats["index"] == "flat"
    # measured against the true people over every clustered face (not only the labelled ones)
    got = [(r["identity"], truth[r["id"]]) for r in faces if r["identity"] is not None]
    whole = agreement(np.array([hash(c) % 10**9 for c, _ in got]), ["all"] * len(got), [p for _, p in got])
    assert whole["purity"] >= 0.95 and whole["pairwise_precision"] >= 0.9, whole
    assert whole["inverse_purity"] >= 0.8 and whole["pairwise_recall"] >= 0.6, whole
    # the labelled part: the same measure the job reports, from the embeddings alone
    a = stats["agreement"]
    assert a["labelled_faces"] == sum(1 for r in faces if r["label"] and r["identity"]) and a["labels"] == 4
    assert a["purity"] >= 0.95 and a["inverse_purity"] >= 0.8
    ids = pq.read_table(tmp_path / "out" / "identities.parquet").to_pylist()
    assert sum(r["size"] for r in ids) == stats["clustered"] and len(ids) == stats["identities"]
    assert {r["identity"] for r in ids} == {r["identity"] for r in faces if r["identity"]}
    grace = [r for r in ids if r["label"] == "celeb-grace"]
    assert grace and grace[0]["sources"] == ["celeba"] and grace[0]["label_share"] == 1.0
    json.loads((tmp_path / "out" / "stats.json").read_text())  # written whole, last


def test_pairs_are_other_photos_of_the_same_person(corpus, tmp_path):
    folder, truth = corpus
    stats = run(corpus, tmp_path / "out", pairs={"per_face": 2, "min_distance": 0.15})
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    who = {r["id"]: r["identity"] for r in pq.read_table(tmp_path / "out" / "faces.parquet").to_pylist()}
    assert pairs and stats["pairs"] == len(pairs)
    assert all(p["id"] != p["reference_id"] and who[p["id"]] == who[p["reference_id"]] == p["identity"] for p in pairs)
    assert sum(truth[p["id"]] == truth[p["reference_id"]] for p in pairs) >= 0.95 * len(pairs)
    assert all(p["distance"] >= 0.15 for p in pairs) and max(Counter(p["id"] for p in pairs).values()) <= 2


def test_trusted_labels_join_what_the_embeddings_alone_split(corpus, tmp_path):
    folder, truth = corpus
    # so strict that the embeddings link almost nothing: the labelled people are still one identity each
    run(corpus, tmp_path / "out", same_person={"max_distance": 0.05}, labels="trust")
    faces = [r for r in pq.read_table(tmp_path / "out" / "faces.parquet").to_pylist() if r["identity"]]
    by_label: dict = {}
    for r in faces:
        if r["label"]:
            by_label.setdefault(r["label"], set()).add(r["identity"])
    assert len(by_label) == 4 and all(len(v) == 1 for v in by_label.values()), by_label
    unlabelled = [r for r in faces if not r["label"]]
    assert len({r["identity"] for r in unlabelled}) >= len(unlabelled) - 2  # mostly alone, as the threshold says


def test_the_search_on_ray_and_an_inverted_index_give_the_flat_searchs_identities(corpus, tmp_path, ray_local):
    def identities(out, **over) -> list:
        run(corpus, tmp_path / out, **over)
        return sorted((r["id"], r["identity"]) for r in pq.read_table(tmp_path / out / "faces.parquet").to_pylist())

    flat = identities("flat")
    assert identities("ray", shard_rows=9) == flat  # six Ray tasks, one shard each
    assert identities("ivf", index={"kind": "ivf", "nlist": 2, "nprobe": 2}) == flat  # every list searched: exact


def test_edges_end_cleanly(corpus, tmp_path):
    from pipelines.identities import run_identities

    schema = pa.schema([spss_schema().field(c) for c in COLUMNS])
    # two face models' embeddings cannot be compared: one line naming both
    mixed = tmp_path / "mixed" / "kept"
    mixed.mkdir(parents=True)
    rows = pq.read_table(corpus[0] / "kept" / "part-0.parquet").to_pylist()[:4]
    rows[0]["id_backend"] = "arcface_ir_se50"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), mixed / "p.parquet")
    with pytest.raises(ValueError, match="2 face models \\(arcface_ir_se50, dlib_resnet_v1\\)"):
        run_identities(mixed.parent, tmp_path / "o1", cfg(), log=lambda m: None)
    # no embedding at all: every record accounted for, no identity
    none = tmp_path / "none" / "kept"
    none.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{**r, "id_embedding": None, "id_backend": None} for r in rows], schema=schema),
                   none / "p.parquet")
    s = run_identities(none.parent, tmp_path / "o2", cfg(), log=lambda m: None)
    assert s["adds_up"] and s["no_embedding"] == 4 and s["identities"] == s["pairs"] == 0
    # one record: its own identity
    one = tmp_path / "one" / "kept"
    one.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[1:2], schema=schema), one / "p.parquet")
    s = run_identities(one.parent, tmp_path / "o3", cfg(), log=lambda m: None)
    assert s["identities"] == s["singletons"] == 1 and s["pairs"] == 0
    # no rows: refused before the output is made
    empty = tmp_path / "empty" / "kept"
    empty.mkdir(parents=True)
    pq.write_table(schema.empty_table(), empty / "p.parquet")
    with pytest.raises(ValueError, match="nothing to cluster"):
        run_identities(empty.parent, tmp_path / "o4", cfg(), log=lambda m: None)
    assert not (tmp_path / "o4").exists()
    # a rerun with the same settings finds the run done and rewrites nothing
    faces = tmp_path / "o3" / "faces.parquet"
    before = faces.stat().st_mtime_ns
    assert run_identities(one.parent, tmp_path / "o3", cfg(), log=lambda m: None)["identities"] == 1
    assert faces.stat().st_mtime_ns == before


def test_infu_identities_prints_its_summary_and_writes_its_report(corpus, tmp_path):
    from pipelines.cli import main

    out = tmp_path / "ids"
    r = CliRunner().invoke(main, ["identities", str(corpus[0]), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "identities summary" in r.output and "against the datasets' own labels (" in r.output
    assert "faces clustered " in r.output and "(0 of several people)" in r.output
    assert "accounting: every face clustered or counted without an embedding: yes" in r.output
    page = (out / "report.html").read_text()
    assert "<h3>Identities</h3>" in page and "largest identities" in page


def test_group_photos_are_kept_as_multi_id_records_and_their_faces_join_the_people(ray_local, tmp_path):
    """curate with faces.groups.keep: two portraits side by side and the group photo are multi-ID records in
    groups/ (every record accounted for), the single portraits stay in kept/; infu identities then puts
    each face of a group photo with the portraits of the same person, and never pairs two faces of one photo."""
    from pipelines.curate import run_curate
    from pipelines.identities import run_identities
    from pipelines.job import SourceSpec

    src = tmp_path / "photos"
    src.mkdir()
    a, g = samples.astronaut(), samples.grace_hopper()
    rng = np.random.default_rng(1)
    for k in range(3):
        another_photo(a, rng).save(src / f"astronaut-{k}.jpg")
        another_photo(g, rng).save(src / f"grace-{k}.jpg")
    samples.side_by_side(a, g).save(src / "both.jpg")
    samples.group().save(src / "group.jpg")
    samples.cat().save(src / "cat.jpg")
    over = {"progress": False, "dedup": {"enabled": False},
            "stages": [{"name": "faces", "backend": "dlib", "groups": {"keep": True, "max_faces": 4}}]}
    stats = run_curate([SourceSpec("folder", "photos", str(src))], tmp_path / "curated",
                       load_config("curate", overrides=over), log=lambda m: None)
    assert stats["adds_up"] and stats["groups"] == 2 and stats["inputs"] == 9, stats
    groups = pq.read_table(tmp_path / "curated" / "groups").to_pylist()
    assert sorted(r["path"] for r in groups) == ["both.jpg", "group.jpg"]
    assert all(r["status"] == "kept" and len(r["faces_embedding"]) == r["face_count"] >= 2 for r in groups)
    kept = pq.read_table(tmp_path / "curated" / "kept").to_pylist()
    assert sorted(r["path"] for r in kept) == sorted(f"{p}-{k}.jpg" for p in ("astronaut", "grace") for k in range(3))
    assert all(r["faces_bbox"] is None for r in kept)
    default = run_curate([SourceSpec("folder", "photos", str(src))], tmp_path / "single",
                         load_config("curate", overrides={**over, "stages": [{"name": "faces", "backend": "dlib"}]}),
                         log=lambda m: None)
    assert default["groups"] == 0 and default["by_reason"]["multiple_faces"] == 2  # unchanged without the option

    s = run_identities(tmp_path / "curated", tmp_path / "ids", cfg(), log=lambda m: None)
    faces = pq.read_table(tmp_path / "ids" / "faces.parquet").to_pylist()
    assert s["records"] == 8 and s["multi_id_records"] == 2 and s["inputs"] == 6 + 2 + 4 and s["adds_up"]
    of = {(r["id"], r["face"]): r["identity"] for r in faces}
    both = [r for r in groups if r["path"] == "both.jpg"][0]
    left = min(range(2), key=lambda k: both["faces_bbox"][k][0])  # the astronaut
    astronaut = {of[(r["id"], 0)] for r in kept if r["path"].startswith("astronaut")}
    grace = {of[(r["id"], 0)] for r in kept if r["path"].startswith("grace")}
    assert astronaut == {of[(both["id"], left)]} and grace == {of[(both["id"], 1 - left)]} and astronaut != grace
    pairs = pq.read_table(tmp_path / "ids" / "pairs.parquet").to_pylist()
    assert pairs and all(p["id"] != p["reference_id"] for p in pairs)
    assert any(p["id"] == both["id"] for p in pairs)  # a group photo's face has references: the portraits


def test_identities_read_from_a_bucket_and_write_into_one_as_on_disk(corpus, s3_env, tmp_path):
    from infu_model.storage import read_parquet

    src = s3_env.upload(corpus[0], f"{s3_env.bucket('faces')}/curated")
    disk, bucket = run(corpus, tmp_path / "disk"), run((src, corpus[1]), "s3://faces/identities")
    assert {k: v for k, v in bucket.items() if k not in ("elapsed_s", "timings_s")} == \
           {k: v for k, v in disk.items() if k not in ("elapsed_s", "timings_s")}
    for name in ("faces", "identities", "pairs"):
        assert read_parquet(f"s3://faces/identities/{name}.parquet").equals(read_parquet(tmp_path / "disk" / f"{name}.parquet"))
    assert "identities/stats.json" in s3_env.keys("faces")
