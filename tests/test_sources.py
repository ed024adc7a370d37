"""Each adapter on a miniature replica of its dataset's real layout."""
import pytest

from curation.sources import SOURCES, SourceError, make_source
from pipelines.jobs import load_config
from replicas import BUILDERS


def sources(**kind_options):
    """A curate config's ``sources`` block, the given kinds' options laid over the defaults."""
    return load_config("curate", overrides={"sources": kind_options}).sources


def _items(kind, tmp_path, **options):
    BUILDERS[kind](tmp_path)
    src = make_source(kind, kind, str(tmp_path), sources(**({kind: options} if options else {})))
    src.check()
    return src, list(src.items())


def test_every_paper_dataset_has_an_adapter():
    assert set(SOURCES) == {"vggface2", "millioncelebs", "celeba", "celebv_hq", "ffhq", "vfhq",
                            "easyportrait", "celebv_text", "cosmicmanhq", "folder"}


def test_vggface2_identity_and_gender(tmp_path):
    _, rows = _items("vggface2", tmp_path)
    assert len(rows) == 6
    by_path = {r["path"]: r for r in rows}
    assert by_path["train/n000002/0000_01.jpg"]["identity"] == "n000002"
    assert by_path["train/n000002/0000_01.jpg"]["gender"] == "female"
    assert by_path["test/n009000/0001_01.jpg"]["gender"] == "male"
    assert all("Person" not in str(r) for r in rows), "names must not leak into records"


def test_millioncelebs_identity_is_the_folder(tmp_path):
    _, rows = _items("millioncelebs", tmp_path)
    assert sorted({r["identity"] for r in rows}) == ["m.0abc1", "m.0xyz9"]


def test_celeba_attributes_become_a_sentence(tmp_path):
    _, rows = _items("celeba", tmp_path)
    r1, r2, _ = rows
    assert (r1["identity"], r2["identity"]) == ("2880", "2937")
    assert r1["gender"] == "female" and r2["gender"] == "male"
    text = r1["captions"][0]
    assert text["source"] == "dataset"
    assert "smiling young woman" in text["text"] and "wavy black hair" in text["text"]
    assert "eyeglasses" in r2["captions"][0]["text"]


def test_celebv_hq_samples_frames_evenly(tmp_path):
    _, rows = _items("celebv_hq", tmp_path)
    frames = {}
    for r in rows:
        frames.setdefault(r["path"], []).append(r["frame"])
    assert frames["processed/0-5BrmyFsYM_0.mp4"] == [0, 10, 19, 29]
    assert frames["processed/00-30GQl0TM_7.mp4"] == [0, 3, 6, 9]
    assert len({r["id"] for r in rows}) == 8, "each frame is its own row with its own id"


def test_vfhq_frames_keep_their_files_and_identity(tmp_path):
    _, rows = _items("vfhq", tmp_path)
    assert [r["frame"] for r in rows] == [0, 4, 7, 11]
    assert all(r["identity"] == "G0DGRma_p48+P0" for r in rows)
    assert rows[1]["_uri"].endswith("00000004.png") and rows[1]["_media"] == "image"


def test_easyportrait_user_is_identity(tmp_path):
    _, rows = _items("easyportrait", tmp_path)
    assert sorted(r["identity"] for r in rows) == ["1b11", "1b11", "6422"]


def test_celebv_text_descriptions_are_captions(tmp_path):
    _, rows = _items("celebv_text", tmp_path)
    assert len(rows) == 4
    texts = [c["text"] for c in rows[0]["captions"]]
    assert texts == ["She looks calm.", "A young woman with dark hair.", "She wears a white suit."]


def test_cosmicmanhq_captions_and_missing_files(tmp_path):
    _, rows = _items("cosmicmanhq", tmp_path)
    assert [r["captions"][0]["text"] for r in rows] == ["a woman in a white space suit", "a man in a suit", "lost"]
    assert rows[2]["status"] == "quarantined" and rows[2]["reason"] == "missing_file"


def test_ffhq_reads_the_full_size_folder_only(tmp_path):
    _, rows = _items("ffhq", tmp_path)
    assert len(rows) == 3 and all(r["path"].startswith("images1024x1024/") for r in rows)


def test_folder_sidecar_captions_and_ignored_files(tmp_path):
    src, rows = _items("folder", tmp_path)
    assert [r["path"] for r in rows] == ["a/one.jpg", "b/two.png"]
    assert rows[0]["captions"] == [{"source": "dataset", "text": "a portrait of a woman"}]
    assert src.ignored_files >= 1


def test_listing_is_lazy_and_deterministic(tmp_path):
    BUILDERS["vggface2"](tmp_path)
    src = make_source("vggface2", "v", str(tmp_path), sources())
    it = src.items()
    first = next(it)  # a generator: nothing is listed ahead of need
    assert first["path"] == "train/n000002/0000_01.jpg"
    again = [r["id"] for r in make_source("vggface2", "v", str(tmp_path), sources()).items()]
    assert again[0] == first["id"] and len(again) == 6


def test_missing_root_and_unknown_kind_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        make_source("ffhq", "ffhq", str(tmp_path / "nope"), sources()).check()
    with pytest.raises(SourceError, match="unknown source 'ffhq2'"):
        make_source("ffhq2", "x", str(tmp_path), sources())
