"""Captions: hygiene on nasty outputs, tiny BLIP-2, InternVL and a chat VLM through the production loaders, the job."""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from curation import samples
from curation.caption_text import clean_caption
from curation.engine import ALIVE, run_stage
from curation.records import stable_id
from curation.registry import empty_row
from curation.registry import spss_schema
from pipelines.caption import run_caption
from pipelines.jobs import load_config
from stages import caption_stage
from tiny_vlm import INTERNVL_TEMPLATE, make_tiny_blip2, make_tiny_chat_vlm, make_tiny_internvl


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
    ("a woman\x05 in a \ufffd red\x13 coat\x00", None, "A woman in a red coat"),
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
    pq.write_table(pa.Table.from_pylist(rows, schema=spss_schema()), tmp / "kept" / "part-0.parquet")
    return tmp


def test_caption_job_with_tiny_blip2_and_native_internvl(ray_local, tmp_path):
    spss = _spss(tmp_path / "in")
    assert load_config("caption").captioners[1].opts.backend == "internvl", "the documented path is the native class"
    cfg = load_config("caption", overrides={"progress": False, "captioners": [
        {"name": "blip2", "model": str(make_tiny_blip2(tmp_path / "blip2")), "max_new_tokens": 8},
        {"name": "internvl", "model": str(make_tiny_internvl(tmp_path / "internvl")), "max_new_tokens": 8}]})
    stats = run_caption(spss, tmp_path / "out", cfg, log=lambda m: None)
    assert stats["adds_up"] and stats["kept"] == 4 and stats["stages"]["internvl"]["ran"]
    assert set(stats["captions_per_source"]) == {"dataset", "blip2", "internvl"}
    rows = pads.dataset(str(tmp_path / "out" / "kept")).to_table().to_pylist()
    assert len(rows) == 4 and all(r["image"] for r in rows)
    for r in rows:
        for src in ("blip2", "internvl"):
            made = [c for c in r["captions"] if c["source"] == src] + [d for d in r["caption_drops"] if d["source"] == src]
            assert len(made) == 1, "every captioner either adds a caption or records why not"
        for c in r["captions"]:
            assert c["text"] == clean_caption(c["text"])[0], "stored captions are already clean"
    dataset = [c["text"] for r in rows for c in r["captions"] if c["source"] == "dataset"]
    assert dataset == ["A person outdoors."] * 2
    again = run_caption(spss, tmp_path / "out", cfg, log=lambda m: None)  # resume: nothing left, nothing doubled
    assert again["kept"] == 4 and again["adds_up"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["inputs"] == 4


def test_without_weights_keeps_dataset_text_and_invents_none(ray_local, tmp_path):
    """Captioners whose model is null (the default names the Hub's BLIP-2 and InternVL) do not run."""
    spss = _spss(tmp_path / "in")
    off = {"progress": False, "captioners": [{"name": "blip2", "model": None}, {"name": "internvl", "model": None}]}
    stats = run_caption(spss, tmp_path / "out", load_config("caption", overrides=off), log=lambda m: None)
    assert not stats["stages"]["blip2"]["ran"] and "no text invented" in stats["stages"]["internvl"]["note"]
    assert stats["captions_per_source"] == {"dataset": 2} and stats["rows_without_captions"] == 2


@pytest.mark.parametrize("backend,make", [("blip2", make_tiny_blip2), ("chat_vlm", make_tiny_chat_vlm),
                                          ("internvl", make_tiny_internvl)])
def test_caption_stage_batches_real_photos(tmp_path, backend, make):
    stage = caption_stage(name=backend, backend=backend, model=str(make(tmp_path / "m")), max_new_tokens=6)
    rows = []
    for im in (samples.astronaut(), samples.grace_hopper(), samples.group()):
        r = empty_row()
        r.update(id="x", status=ALIVE, image=samples.jpeg_bytes(im), captions=[])
        rows.append(r)
    run_stage(stage, rows)
    assert all(r["status"] == ALIVE for r in rows)
    assert all(len(r["captions"] or []) + len(r["caption_drops"] or []) == 1 for r in rows)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        caption_stage(name="blip2", model=str(tmp_path / "nowhere")).setup()


@pytest.mark.parametrize("tiles", [1, 4])
def test_internvl_prompt_and_pixels_are_what_transformers_processor_makes(tmp_path, tiles, monkeypatch):
    from transformers import InternVLProcessor
    from transformers.processing_utils import ProcessorMixin

    from curation.captioners import InternVLCaptioner

    captioner = InternVLCaptioner(str(make_tiny_internvl(tmp_path / "m")), max_tiles=tiles)
    # the processor class demands a video processor (torchvision); images never touch it
    check = ProcessorMixin.check_argument_for_proper_class
    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class",
                        lambda self, name, arg: None if arg is None else check(self, name, arg))
    processor = InternVLProcessor(image_processor=captioner.images, tokenizer=captioner.tokenizer,
                                  video_processor=None, image_seq_length=4, chat_template=INTERNVL_TEMPLATE)
    photos = [samples.astronaut(), samples.group()]  # square and 4:3: different tile counts
    ours = captioner.inputs(photos)
    theirs = processor(images=photos, text=[captioner.prompt] * 2, return_tensors="pt", padding=True,
                       crop_to_patches=tiles > 1, max_patches=tiles)
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert ours[key].equal(theirs[key]), key
    assert len(ours["pixel_values"]) == (2 if tiles == 1 else 1 + 4 + 1 + 4), "tiles plus a thumbnail each"


def test_a_folder_that_cannot_serve_internvl_fails_before_any_row_is_read(ray_local, tmp_path):
    import json as _json

    blip = make_tiny_blip2(tmp_path / "blip2")
    with pytest.raises(ValueError, match=r"blip2.*not a native InternVL checkpoint.*'blip-2'"):
        caption_stage(name="internvl", backend="internvl", model=str(blip)).check()
    vl = make_tiny_internvl(tmp_path / "vl")
    (vl / "processor_config.json").write_text(_json.dumps({"image_seq_length": 16}))
    cfg = load_config("caption", overrides={"progress": False, "captioners": [{"name": "internvl", "model": str(vl)}]})
    with pytest.raises(ValueError, match=r"vl: the processor does not match the model \(image tokens per tile: "
                                         r"processor 16, model 4\)"):
        run_caption(_spss(tmp_path / "in"), tmp_path / "out", cfg, log=lambda m: None)
    assert not list((tmp_path / "out").rglob("*.parquet")), "nothing was read or written"


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

    chunked = caption_stage(name="blip2", backend="blip2", model=model, max_new_tokens=6, generate_batch=4,
                            resources={"batch_size": 9})
    chunked.ensure_setup()
    seen, inner = [], chunked.model

    class Counting:
        def __call__(self, images):
            seen.append(len(images))
            return inner(images)

    chunked.model = Counting()
    a = run_stage(chunked, rows())
    assert seen == [4, 4, 1], "nine rows in one Ray batch reach the model four at a time"
    whole = caption_stage(name="blip2", backend="blip2", model=model, max_new_tokens=6, resources={"batch_size": 4})
    b = rows()
    for i in range(0, 9, 4):
        run_stage(whole, b[i:i + 4])
    assert [r["captions"] for r in a] == [r["captions"] for r in b], "same captions as one task per model batch"
