"""``infu app``: the web demo (Gradio, like the official InfiniteYou app) on our pipeline.

An ID photo, an optional control photo and a prompt in; one image out, with InfU's controls (InfuseNet
conditioning scale and guidance window, guidance, steps, seed, size), the LoRAs given at start and a
memory mode (infu_model/memory.py). The model loads once at start; a new memory mode rebuilds it once. Photos reach the
pipeline as the uploaded files, decoded by ``infu_model.images`` like every other stage; what a user
can get wrong (no face in the photo, a size that is not a multiple of 16, a file that is no image)
shows as an error in the page.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from infu_model.memory import MODES
from infu_model.model_options import ModelOptions  # noqa: TC001 - the dataclass field's type
from infu_model.published import GENERATION as G

# system fonts: the page loads nothing from outside the machine
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO = ["ui-monospace", "monospace"]


@dataclass
class Generator:
    """The pipeline a page generates with, loaded on first use and again when the memory mode changes;
    one generation at a time (Gradio's queue runs one per event)."""
    model: ModelOptions               # its ``memory`` is the mode loaded now
    loras: list[tuple[str, float]] = field(default_factory=list)
    _pipe: object = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def lora_names(self) -> list[str]:
        return [Path(p).name for p, _ in self.loras]

    @property
    def memory(self) -> str:
        return self.model.memory

    def pipe(self, memory: str):
        if self._pipe is None or memory != self.memory:
            self._pipe = None  # the old one leaves memory before the new one loads
            self.model = replace(self.model, memory=memory)
            self._pipe = self.model.load(self.loras, log=print)
            self._pipe.set_progress_bar_config(disable=True)  # the page shows the image, the terminal no bars
        return self._pipe

    def use_loras(self, pipe, chosen: list[str]) -> None:
        """Only the ``chosen`` LoRAs (by file name) act, at the weights given at start."""
        if not self.loras:
            return
        picked = [(f"lora{k}", w) for k, ((_, w), name) in enumerate(zip(self.loras, self.lora_names))
                  if name in chosen]
        if picked:
            pipe.enable_lora()
            pipe.set_adapters([n for n, _ in picked], adapter_weights=[w for _, w in picked])
        else:
            pipe.disable_lora()

    def __call__(self, id_path, control_path, prompt, scale, start, end, guidance, steps, seed, width, height,
                 loras=(), memory=None):
        """One image, or ``UserMistake`` saying what to change."""
        from infu_model.images import DecodeError, TooLarge, open_rgb
        from infu_model.memory import NoFP8
        from infu_model.pipeline import NoFaceError

        if not id_path:
            raise UserMistake("Upload a photo of the person (ID photo).")
        if not (prompt or "").strip():
            raise UserMistake("Write a prompt.")
        width, height, steps = int(width), int(height), int(steps)
        if width % 16 or height % 16:  # before the model runs: the page says what to change
            raise UserMistake(f"Width and height must be multiples of 16, got {width}x{height}.")
        try:
            id_photo = open_rgb(id_path)
            control = open_rgb(control_path) if control_path else None
        except (DecodeError, TooLarge) as e:
            raise UserMistake(f"An uploaded file is not a usable image ({e}).") from None
        with self._lock:
            try:
                pipe = self.pipe(memory or self.memory)
                self.use_loras(pipe, list(loras or []))
                return pipe(id_photo, prompt, control_image=control, width=width, height=height,
                            num_inference_steps=steps, guidance_scale=float(guidance), seed=int(seed),
                            infusenet_conditioning_scale=float(scale), infusenet_guidance_start=float(start),
                            infusenet_guidance_end=float(end)).images[0]
            except NoFaceError as e:
                raise UserMistake(f"No face found: {e}") from None
            except (ValueError, NoFP8) as e:
                raise UserMistake(str(e)) from None


class UserMistake(Exception):
    """What the page shows as an error."""


def build_app(gen: Generator):
    """The page: inputs on the left, the image and InfU's controls on the right."""
    import gradio as gr

    def run(*args):
        try:
            return gen(*args)
        except UserMistake as e:
            raise gr.Error(str(e), print_exception=False) from None

    with gr.Blocks(title="InfiniteYou (InfU) on FLUX", analytics_enabled=False) as app:
        gr.Markdown("## InfiniteYou: identity-preserved photos on FLUX\nUpload a photo of a person, write a "
                    "prompt, generate. A control photo fixes where the face goes and how it is posed.")
        with gr.Row():
            with gr.Column():
                id_photo = gr.Image(label="ID photo (the person)", type="filepath", image_mode=None,
                                    sources=["upload", "clipboard"], elem_id="id_photo")
                control = gr.Image(label="Control photo (optional: face position and pose)", type="filepath",
                                   image_mode=None, sources=["upload", "clipboard"], elem_id="control_photo")
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                    placeholder="a portrait photo of a woman in a garden, soft light")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                image = gr.Image(label="Generated", type="pil", format="png", interactive=False, elem_id="output")
                with gr.Accordion("InfU controls", open=True):
                    scale = gr.Slider(0.0, 1.5, value=G["scale"], step=0.05, label="InfuseNet conditioning scale")
                    start = gr.Slider(0.0, 1.0, value=G["start"], step=0.05, label="InfuseNet guidance start")
                    end = gr.Slider(0.0, 1.0, value=G["end"], step=0.05, label="InfuseNet guidance end")
                    guidance = gr.Slider(1.0, 10.0, value=G["guidance"], step=0.1, label="Guidance scale")
                    steps = gr.Slider(1, 50, value=G["steps"], step=1, label="Steps", elem_id="steps")
                    seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                    with gr.Row():
                        width = gr.Number(value=G["width"], precision=0, label="Width (multiple of 16)",
                                          elem_id="width")
                        height = gr.Number(value=G["height"], precision=0, label="Height (multiple of 16)",
                                           elem_id="height")
                    loras = gr.CheckboxGroup(gen.lora_names, value=gen.lora_names, label="LoRAs",
                                             visible=bool(gen.loras))
                    memory = gr.Dropdown(list(MODES), value=gen.memory, label="Memory mode (auto: what the free "
                                         "GPU memory fits)", elem_id="memory")
        button.click(run, [id_photo, control, prompt, scale, start, end, guidance, steps, seed, width, height,
                           loras, memory], image, api_name="generate")
    return app


def serve(gen: Generator, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Build the page and serve it at http://HOST:PORT (``block``: until interrupted)."""
    import os

    import gradio as gr

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a lab's GPU node
    app = build_app(gen)
    theme = gr.themes.Default(font=FONTS, font_mono=MONO)
    app.queue(default_concurrency_limit=1).launch(server_name=host, server_port=port, prevent_thread_lock=not block,
                                                  quiet=True, theme=theme, footer_links=[], show_error=True)
    return app
