"""`infu app`, the web demo, used as a person would in headless Chromium with the tiny model: the page
loads without errors, a generation through the page returns the pipeline's own image, and what a
user gets wrong (no face in the photo, a size that is not a multiple of 16) shows in the page."""
import json
import socket
import time
import urllib.request
from io import BytesIO

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from curation import samples
from infu_model.images import open_rgb
from infu_model.tiny import make_tiny

SETTINGS = {"#width input": 64, "#height input": 64, "#steps input": 2, "#seed input": 7}


def tiny_model(tiny):
    """The app's model description for the tiny FLUX + InfU, on the CPU in float32."""
    from infu_model.hub import ModelRef
    from infu_model.model_options import ModelOptions

    return ModelOptions(ModelRef.parse(tiny["base"]), ModelRef.parse(tiny["infu"]), "aes_stage2", "float32", "cpu",
                        "auto", False, {})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("gradio")
    from browser import require_chromium

    require_chromium()
    from pipelines.app import Generator, serve

    tiny = make_tiny(tmp_path_factory.mktemp("tiny"))
    gen = Generator(tiny_model(tiny))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = serve(gen, "127.0.0.1", port, block=False)
    yield gen, f"http://127.0.0.1:{port}/"
    app.close()


def wait_for(page, expression: str, seconds: float = 120):
    end = time.time() + seconds
    while time.time() < end:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(expression)


def upload(page, component: str, path) -> None:
    root = page.send("DOM.getDocument", session=True, depth=-1)["root"]["nodeId"]
    node = page.send("DOM.querySelector", session=True, nodeId=root, selector=f"{component} input[type=file]")
    page.send("DOM.setFileInputFiles", session=True, nodeId=node["nodeId"], files=[str(path)])
    wait_for(page, f"!!document.querySelector('{component} img')", 30)


def type_into(page, selector: str, value) -> None:
    page.evaluate(f"""(() => {{ const e = document.querySelector('{selector}'); e.value = {json.dumps(str(value))};
        for (const kind of ['input', 'change', 'blur']) e.dispatchEvent(new Event(kind, {{bubbles: true}})); }})()""")


def generate(page, **settings) -> tuple[str | None, str | None]:
    """Click Generate with ``settings`` typed in; (output image URL, error shown) once either appears."""
    for selector, value in {**SETTINGS, **settings}.items():
        type_into(page, selector, value)
    before = page.evaluate("(document.querySelector('#output img') || {}).src || null")
    page.evaluate("document.querySelector('#generate').click()")
    return wait_for(page, f"""(() => {{ const img = document.querySelector('#output img');
        const toast = document.querySelector('.toast-body');
        if (toast && toast.innerText.trim()) return [null, toast.innerText];
        if (img && img.src !== {json.dumps(before)}) return [img.src, null]; return null; }})()""")


def test_a_generation_through_the_page_is_the_pipelines_own_image(served, tmp_path):
    """The ID photo an EXIF-rotated JPEG: the page hands the file to the engine's one decoder, so the
    image equals the pipeline run on that decode with the same settings."""
    from browser import Page

    gen, url = served
    photo = tmp_path / "rotated.jpg"
    photo.write_bytes(samples.exif_rotated(samples.grace_hopper()))
    with Page(url) as page:
        wait_for(page, "!!document.querySelector('#generate')")
        upload(page, "#id_photo", photo)
        type_into(page, "#prompt textarea", "a portrait photo, studio light")
        src, error = generate(page)
        assert error is None and src, error
        assert page.errors == []
    shown = np.asarray(Image.open(BytesIO(urllib.request.urlopen(src).read())).convert("RGB"))
    direct = gen.pipe(gen.memory)(open_rgb(photo), "a portrait photo, studio light", width=64, height=64,
                              num_inference_steps=2, guidance_scale=3.5, seed=7).images[0]
    assert shown.shape == (64, 64, 3) and np.array_equal(shown, np.asarray(direct))


def test_a_photo_without_a_face_and_a_wrong_size_are_errors_in_the_page(served, tmp_path):
    from browser import Page

    _, url = served
    cat = tmp_path / "cat.png"
    samples.cat().save(cat)
    with Page(url) as page:
        wait_for(page, "!!document.querySelector('#generate')")
        type_into(page, "#prompt textarea", "a portrait photo")
        upload(page, "#id_photo", cat)
        src, error = generate(page)
        assert src is None and "No face" in error, error
        assert page.errors == [], "an error the page shows is not a broken page"
    with Page(url) as page:  # a fresh page: a user who fixes the photo and types a wrong width
        wait_for(page, "!!document.querySelector('#generate')")
        type_into(page, "#prompt textarea", "a portrait photo")
        upload(page, "#id_photo", samples.grace_hopper_path())
        upload(page, "#control_photo", samples.group_path())
        src, error = generate(page, **{"#width input": 70})
        assert src is None and "multiples of 16" in error and "70x64" in error, error


def test_app_refuses_a_missing_model_folder_in_one_line(tmp_path):
    from pipelines.cli import main

    r = CliRunner().invoke(main, ["app", "--base", str(tmp_path / "none"), "--infu", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"Error: FLUX base: model not found: {tmp_path / 'none'}\n" in r.output


def test_the_pages_lora_switch_turns_a_lora_off_and_on_again(tmp_path):
    """A LoRA given at start acts when its box is ticked; unticked, the image is the plain model's."""
    from diffusers import FluxPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from infu_model.pipeline import load_pipeline
    from pipelines.app import Generator

    tiny = make_tiny(tmp_path / "tiny")
    donor = FluxPipeline.from_pretrained(tiny["base"])
    donor.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                             init_lora_weights=False))
    FluxPipeline.save_lora_weights(tmp_path / "realism", transformer_lora_layers=get_peft_model_state_dict(
        donor.transformer))
    gen = Generator(tiny_model(tiny), loras=[(str(tmp_path / "realism"), 0.8)])
    photo = samples.grace_hopper_path()
    page = (str(photo), None, "a portrait photo", 1.0, 0.0, 1.0, 3.5, 2, 7, 64, 64)
    on, off, again = (np.asarray(gen(*page, loras=chosen)) for chosen in (["realism"], [], ["realism"]))
    plain = load_pipeline(tiny["base"], tiny["infu"], dtype="float32", device="cpu")(
        open_rgb(photo), "a portrait photo", width=64, height=64, num_inference_steps=2, seed=7).images[0]
    assert gen.lora_names == ["realism"]
    assert np.array_equal(on, again) and not np.array_equal(on, off)
    assert np.abs(off.astype(int) - np.asarray(plain).astype(int)).max() <= 1
