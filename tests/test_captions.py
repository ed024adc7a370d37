"""Captions: hygiene on nasty outputs, tiny BLIP-2 and chat VLM through the production loaders, the job."""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from curation import samples
from curation.caption_stage import CaptionStage
from curation.caption_text import clean_caption
from curation.records import ALIVE, SPSS_SCHEMA, empty_row, stable_id
from curation.stage import run_stage
from pipelines.caption import run_caption
from pipelines.config import load_config
from tiny_vlm import make_tiny_blip2, make_tiny_chat_vlm


@pytest.mark.parametrize("raw,prompt,expected", [
    ("Question: describe the person. Answer: a woman in a red coat", "Question: describe the person. Answer:",
     "A woman in a red coat"),
    ("The image shows a man with a beard standing in a park.", None, "A man with a beard standing in a park."),
    ("this is a picture of an old man reading", None, "An old man reading"),
    ("In this photo, Tom Hanks smiles at the camera.", None, "A person smiles at the camera."),
    ("A man in a Red Cross vest talks to Barack Obama on a Sunday.", None,
     "A man in a Red Cross vest talks to a person on a Sunday."),
    ("Sure! Here is a description: A young woman with long hair.", None, "A young woman with long hair."),
    ("  a   woman\n\n smiling  ", None, "A woman smiling"),
    ('"a boy in a hat"', None, "A boy in a hat"),
])
def test_hygiene_cleans(raw, prompt, expected):
    assert clean_caption(raw, prompt) == (expected, None)


@pytest.mark.parametrize("raw,reason", [
    ("a photo of a woman a woman a woman a woman a woman", "degenerate_caption"),
    ("the the the the the", "degenerate_caption"),
    ("a photo offfffffff", "degenerate_caption"),
    ("A portrait of a woman. " * 30, "degenerate_caption"),
    ("   \n ", "empty_caption"),
    ("~<@'<@'<", "empty_caption"),
    ("The image shows", "empty_caption"),
    (None, "empty_caption"),
])
def test_hygiene_drops_with_a_reason(raw, reason):
    assert clean_caption(raw) == (None, reason)


def test_long_captions_are_cut_at_a_sentence_and_names_from_a_list_go():
    text = "A woman in a blue dress stands on a beach at sunset. " + "She holds a straw hat and laughs. " * 3
    out, _ = clean_caption(text, max_chars=80)
    assert out == "A woman in a blue dress stands on a beach at sunset."
    assert clean_caption("photo of grace hopper at her desk", names={"Grace Hopper"})[0] == "Photo of a person at her desk"


def _spss(tmp: Path, n: int = 4) -> Path:
    photos = [samples.astronaut(), samples.grace_hopper(), samples.group(), samples.cat()]
    rows = []
    for i in range(n):
        r = {k: v for k, v in empty_row().items() if not k.startswith("_")}
        r.update(id=stable_id("t", f"{i}.jpg"), source="t", path=f"{i}.jpg", frame=-1, status="kept",
                 image=samples.jpeg_bytes(photos[i % 4]),
                 captions=[{"source": "dataset", "text": "The image shows a person outdoors."}] if i % 2 else [])
        rows.append(r)
    (tmp / "kept").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SPSS_SCHEMA), tmp / "kept" / "part-0.parquet")
    return tmp


def test_caption_job_with_tiny_blip2_and_chat_vlm(ray_local, tmp_path):
    spss = _spss(tmp_path / "in")
    cfg = load_config("caption", overrides={"progress": False})
    cfg["captioners"][0].update(model=str(make_tiny_blip2(tmp_path / "blip2")), max_new_tokens=8)
    cfg["captioners"][1].update(backend="chat_vlm", model=str(make_tiny_chat_vlm(tmp_path / "vlm")), max_new_tokens=8)
    stats = run_caption(spss, tmp_path / "out", cfg, log=lambda m: None)
    assert stats["adds_up"] and stats["kept"] == 4 and stats["stages"]["blip2"]["ran"]
    rows = pads.dataset(str(tmp_path / "out" / "kept")).to_table().to_pylist()
    assert len(rows) == 4 and all(r["image"] for r in rows)
    for r in rows:
        for src in ("blip2", "internvl2"):
            made = [c for c in r["captions"] if c["source"] == src] + [d for d in r["caption_drops"] if d["source"] == src]
            assert len(made) == 1, "every captioner either adds a caption or records why not"
        for c in r["captions"]:
            assert c["text"] == clean_caption(c["text"])[0], "stored captions are already clean"
    dataset = [c["text"] for r in rows for c in r["captions"] if c["source"] == "dataset"]
    assert dataset == ["A person outdoors."] * 2
    again = run_caption(spss, tmp_path / "out", cfg, log=lambda m: None)  # resume: nothing left, nothing doubled
    assert again["kept"] == 4 and again["adds_up"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["inputs"] == 4


def test_offline_without_weights_keeps_dataset_text_and_invents_none(ray_local, tmp_path):
    spss = _spss(tmp_path / "in")
    stats = run_caption(spss, tmp_path / "out", load_config("caption", overrides={"progress": False}),
                        log=lambda m: None)
    assert not stats["stages"]["blip2"]["ran"] and "no text invented" in stats["stages"]["internvl2"]["note"]
    assert stats["captions_per_source"] == {"dataset": 2} and stats["rows_without_captions"] == 2


def test_caption_stage_batches_real_photos_through_blip2(tmp_path):
    stage = CaptionStage({"name": "blip2", "backend": "blip2", "model": str(make_tiny_blip2(tmp_path / "b")),
                          "max_new_tokens": 6})
    rows = []
    for im in (samples.astronaut(), samples.grace_hopper(), samples.group()):
        r = empty_row()
        r.update(id="x", status=ALIVE, image=samples.jpeg_bytes(im), captions=[])
        rows.append(r)
    run_stage(stage, rows)
    assert all(r["status"] == ALIVE for r in rows)
    assert all(len(r["captions"] or []) + len(r["caption_drops"] or []) == 1 for r in rows)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CaptionStage({"name": "blip2", "model": str(tmp_path / "nowhere")}).setup()


def test_a_ray_batch_reaches_the_model_in_generate_batch_chunks(tmp_path):
    model = str(make_tiny_blip2(tmp_path / "b"))
    photos = [samples.jpeg_bytes(im) for im in (samples.astronaut(), samples.grace_hopper(), samples.group())] * 3

    def rows():
        out = []
        for i, data in enumerate(photos):
            r = empty_row()
            r.update(id=str(i), status=ALIVE, image=data, captions=[])
            out.append(r)
        return out

    chunked = CaptionStage({"name": "blip2", "backend": "blip2", "model": model, "max_new_tokens": 6,
                            "generate_batch": 4, "resources": {"batch_size": 9}})
    chunked.ensure_setup()
    seen, inner = [], chunked.model

    class Counting:
        def __call__(self, images):
            seen.append(len(images))
            return inner(images)

    chunked.model = Counting()
    a = run_stage(chunked, rows())
    assert seen == [4, 4, 1], "nine rows in one Ray batch reach the model four at a time"
    whole = CaptionStage({"name": "blip2", "backend": "blip2", "model": model, "max_new_tokens": 6,
                          "resources": {"batch_size": 4}})
    b = rows()
    for i in range(0, 9, 4):
        run_stage(whole, b[i:i + 4])
    assert [r["captions"] for r in a] == [r["captions"] for r in b], "same captions as one task per model batch"
