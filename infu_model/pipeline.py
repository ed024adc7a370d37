"""``InfUPipeline``: FLUX + InfuseNet + projection network, exact to InfU v1.0.

Per denoising step InfuseNet reads the noisy latents and the control latent,
attends to the 8 identity tokens (``txt_ids`` zeros) with the prompt's CLIP
pooled embedding and guidance 1.0; its residuals, times
``infusenet_conditioning_scale`` inside the start/end window, are added to the
base transformer's blocks. Beyond the published pipeline:

- steps outside the window (and every step at scale 0) skip InfuseNet entirely
  (the original runs it and multiplies by zero; the output is identical);
- the ID tokens and prompt embeddings are computed once per call, and one call
  can generate several prompts x seeds as one batch;
- with ``infusenet_conditioning_scale=0`` the result equals ``FluxPipeline``'s
  for the same base, prompt and seed (latents are drawn first, from a CPU
  ``torch.Generator`` per seed, as diffusers does);
- InfuseNet and the projection are registered pipeline components, so ``.to()``,
  diffusers' offloading (model, sequential, group) and ``save_pretrained`` /
  ``from_pretrained`` of the whole pipeline handle them;
- memory (``set_memory``): the text encoders on the CPU between calls (T5 and CLIP
  are needed only before the first step), diffusers' model / group / sequential
  offloading; speed: ``compile_blocks`` (regional ``torch.compile`` of the FLUX
  blocks of the transformer and InfuseNet, fused QKV projections);
- LoRAs on the base (``load_loras``), 8-bit or FP8 linear layers (``quantize_weights``, torchao;
  the memory modes of infu_model/memory.py choose), any FLUX-layout base (FLUX.1-schnell: no guidance embedding, few steps).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxControlNetModel, FluxPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from diffusers.utils import BaseOutput
from PIL import Image

from infu_model.control import black_control, draw_kps, fit_on_white
from infu_model.images import upright
from infu_model.faces import FaceAnalyzer, make_face_analyzer
from infu_model import hub
from infu_model.hub import DIFFUSERS, FOLDER
from infu_model.model_options import infu_folder
from infu_model.infusenet import in_window, infusenet_residuals
from infu_model.projection import ProjectionNetwork
from infu_model.regions import combine, default_regions, token_masks
from infu_model.published import GENERATION
from infu_model.memory import WEIGHTS, MemoryPlan, check_fp8, resolve
from infu_model.runtime import torch_device

G = GENERATION
TEXT_ENCODERS = ("gpu", "offload")
OFFLOAD = ("none", "model", "low_vram", "sequential")


class NoFaceError(ValueError):
    """The ID image (or a given control photo) has no detectable face."""


@dataclass
class InfUPipelineOutput(BaseOutput):
    """What ``InfUPipeline`` returns: ``images``, PIL images, an ``(N, H, W, 3)`` array, a tensor, or
    packed latents (``output_type``)."""

    images: list[Image.Image] | np.ndarray | torch.Tensor


def load_infu_weights(infu_path, variant: str = "aes_stage2", torch_dtype=None):
    """(InfuseNet, projection network, meta) from the published layout
    ``infu_flux_v1.0/<variant>/{InfuseNetModel/, image_proj_model.bin}`` (or that variant folder itself)
    or our native one ``<dir>/{infusenet/, image_proj/, infu.json}``; ``infu_path`` is a model reference."""
    root, published = infu_folder(infu_path, variant)
    meta = {}
    if (published / "InfuseNetModel").is_dir():
        infusenet = FluxControlNetModel.from_pretrained(published / "InfuseNetModel", dtype=torch_dtype)
        proj = ProjectionNetwork.from_infu_bin(published / "image_proj_model.bin")
        meta = {"format": "published", "variant": published.name, "face_backend": "insightface"}
        if (root / "infu.json").is_file():  # not in the release; our tiny models say which face backend they need
            meta.update(json.loads((root / "infu.json").read_text()))
    elif (root / "infusenet").is_dir():
        infusenet = FluxControlNetModel.from_pretrained(root / "infusenet", dtype=torch_dtype)
        proj = ProjectionNetwork.from_pretrained(root / "image_proj")
        if (root / "infu.json").is_file():
            meta = json.loads((root / "infu.json").read_text())
        meta.setdefault("format", "native")
    else:
        have = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise FileNotFoundError(f"{infu_path}: {root} holds neither {variant}/InfuseNetModel (published layout) "
                                f"nor infusenet/ (native layout); it has {have}")
    if torch_dtype is not None and torch_dtype != proj.dtype:
        proj = proj.to(torch_dtype)
    return infusenet, proj, meta


def check_compatible(transformer, infusenet, proj) -> None:
    t, n, p = transformer.config, infusenet.config, proj.config
    problems = []
    if n.num_attention_heads * n.attention_head_dim != t.num_attention_heads * t.attention_head_dim:
        problems.append(f"InfuseNet width {n.num_attention_heads * n.attention_head_dim} != base "
                        f"{t.num_attention_heads * t.attention_head_dim}")
    if n.in_channels != t.in_channels:
        problems.append(f"InfuseNet in_channels {n.in_channels} != base {t.in_channels}")
    if n.joint_attention_dim != p.output_dim:
        problems.append(f"projection output {p.output_dim} != InfuseNet joint_attention_dim {n.joint_attention_dim}")
    if n.pooled_projection_dim != t.pooled_projection_dim:
        problems.append(f"InfuseNet pooled_projection_dim {n.pooled_projection_dim} != base {t.pooled_projection_dim}")
    if problems:
        raise ValueError("InfU weights do not match this base model: " + "; ".join(problems))


class InfUPipeline(FluxPipeline):
    """A FluxPipeline with InfuseNet and the projection network as registered components."""

    # InfuseNet runs beside the transformer at every step: like diffusers' ControlNet it stays out of
    # the offload chain (moved in once per call, not once per step)
    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_proj->transformer->vae"

    def __init__(self, scheduler, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, transformer,
                 infusenet: FluxControlNetModel, image_proj: ProjectionNetwork, image_encoder=None,
                 feature_extractor=None):
        super().__init__(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
                         image_encoder=image_encoder, feature_extractor=feature_extractor)
        check_compatible(transformer, infusenet, image_proj)
        self.register_modules(infusenet=infusenet, image_proj=image_proj)
        self.infu_meta, self._face_cfg, self._faces = {}, None, None

    def attach_infu(self, infusenet: FluxControlNetModel, image_proj: ProjectionNetwork,
                    face_analyzer: FaceAnalyzer | dict | None = None, meta: dict | None = None):
        """Other InfU weights on this base (moved to where the transformer is)."""
        check_compatible(self.transformer, infusenet, image_proj)
        self.register_modules(infusenet=infusenet.to(self.transformer.device), image_proj=image_proj.to(self.transformer.device))
        return self.set_face_analyzer(face_analyzer, meta)

    def set_face_analyzer(self, face_analyzer: FaceAnalyzer | dict | None, meta: dict | None = None):
        self.infu_meta = dict(meta or self.infu_meta)
        self._face_cfg = face_analyzer
        self._faces = face_analyzer if isinstance(face_analyzer, FaceAnalyzer) else None
        return self

    @classmethod
    def from_pretrained(cls, base_path, infu_path=None, variant: str = "aes_stage2", torch_dtype=None,
                        face_analyzer: FaceAnalyzer | dict | None = None, **kwargs) -> "InfUPipeline":
        """``base_path``: a FLUX model in diffusers layout and ``infu_path`` published or native InfU
        weights; or ``base_path`` alone: a whole pipeline saved with ``save_pretrained``. Each is a model
        reference (infu_model/hub.py): a folder, ``hf://OWNER/NAME[@REV][/PATH]`` (fetched into the Hub
        cache when missing, only the files read) or a URL."""
        base = hub.resolve(base_path, DIFFUSERS)
        index = base / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"base model not found: {base} (a diffusers FLUX folder with model_index.json)")
        if infu_path is None:
            if "infusenet" not in json.loads(index.read_text()):
                raise ValueError(f"{base} is a base model without InfU weights: give infu_path")
            pipe = super().from_pretrained(base, dtype=torch_dtype, local_files_only=True, **kwargs)
            meta = json.loads((base / "infu.json").read_text()) if (base / "infu.json").is_file() else {}
            return pipe.set_face_analyzer(face_analyzer, meta)
        infusenet, proj, meta = load_infu_weights(infu_path, variant, torch_dtype)
        pipe = super().from_pretrained(base, infusenet=infusenet, image_proj=proj, dtype=torch_dtype,
                                       local_files_only=True, **kwargs)
        return pipe.set_face_analyzer(face_analyzer, meta)

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """The whole pipeline (base, InfuseNet, projection) plus ``infu.json`` (which face backend it needs)."""
        super().save_pretrained(save_directory, **kwargs)
        self._write_meta(Path(save_directory))

    def _write_meta(self, folder: Path, **extra) -> None:
        """``infu.json``: what the weights need besides themselves (the face backend), not where they came from."""
        meta = {k: v for k, v in {**self.infu_meta, **extra}.items() if k != "format"}
        (folder / "infu.json").write_text(json.dumps(meta, indent=1))

    # ----------------------------------------------------------------- pieces --
    @property
    def faces(self) -> FaceAnalyzer:
        if self._faces is None:
            # a config without "backend" uses the one these weights were trained with
            cfg = {"backend": self.infu_meta.get("face_backend", "insightface"), **(self._face_cfg or {})}
            self._faces = make_face_analyzer(cfg)
        return self._faces

    def id_embedding(self, id_image: Image.Image) -> torch.Tensor:
        """The largest face's identity embedding, as the projection network expects it. An image
        opened by the caller is made upright RGB as the decoder does (EXIF, 16-bit, CMYK)."""
        rgb = np.asarray(upright(id_image))
        faces = self.faces.detect(rgb)
        if not faces:
            raise NoFaceError("no face found in the ID image")
        emb = self.faces.embed(rgb, faces[0])
        if emb.shape[-1] != self.image_proj.config.embedding_dim:
            raise ValueError(f"the face backend {self.faces.name} gives {emb.shape[-1]}-d embeddings but these InfU "
                             f"weights expect {self.image_proj.config.embedding_dim}-d")
        return torch.from_numpy(np.asarray(emb, np.float32))[None]

    def control_image(self, control: Image.Image | None, width: int, height: int, faces: int = 1) -> Image.Image:
        """The control image: the keypoints of the largest face of ``control`` (of its ``faces`` largest,
        for several people) drawn on black, or all black without one."""
        if control is None:
            return black_control((width, height))
        canvas = fit_on_white(upright(control), (width, height))
        found = self.faces.detect(np.asarray(canvas))
        if not found:
            raise NoFaceError("no face found in the control image")
        if faces == 1 or len(found) == 1:
            return draw_kps((width, height), found[0].kps)
        return Image.fromarray(np.maximum.reduce([np.asarray(draw_kps((width, height), f.kps)) for f in found[:faces]]))

    def encode_control(self, image: Image.Image, generators: list, device, dtype) -> torch.Tensor:
        """VAE posterior samples of the control image (one per seed, drawn after that seed's
        latents, so a batch equals its single calls), scaled, shifted and packed like the latents."""
        # contiguous: the preprocessor's channels-last strides would send the CPU to other conv kernels than the
        # official pipeline's (1e-3 apart after 30 steps)
        x = self.image_processor.preprocess(image, height=image.height, width=image.width).contiguous()
        x = x.to(device, self.vae.dtype)
        dist = self.vae.encode(x).latent_dist  # encoded once
        lat = torch.cat([dist.sample(g) for g in generators])
        lat = ((lat - self.vae.config.shift_factor) * self.vae.config.scaling_factor).to(dtype)
        b, c, h, w = lat.shape
        return self._pack_latents(lat, b, c, h, w)

    # ---------------------------------------------------------------- __call__ --
    def check_inputs(self, id_image, id_embedding, prompt, prompt_embeds, pooled_prompt_embeds, width: int,
                     height: int, num_images_per_prompt: int, seed, generator, latents, infusenet_guidance_start: float,
                     infusenet_guidance_end: float, output_type: str, callback_on_step_end_tensor_inputs,
                     max_sequence_length: int) -> int:
        """Every argument checked before any model runs (one ValueError naming it); returns the batch size."""
        if id_image is None and id_embedding is None:
            raise ValueError("give id_image (a photo of the person) or a precomputed id_embedding")
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("give either prompt or prompt_embeds (with pooled_prompt_embeds), not both or neither")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds need pooled_prompt_embeds (the CLIP pooled embedding) too")
        mult = self.vae_scale_factor * 2
        if width % mult or height % mult:
            raise ValueError(f"width and height must be multiples of {mult}, got {width}x{height}")
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be at least 1, got {num_images_per_prompt}")
        if not 0.0 <= infusenet_guidance_start <= infusenet_guidance_end <= 1.0:
            raise ValueError(f"the InfuseNet window must satisfy 0 <= start <= end <= 1, got "
                             f"[{infusenet_guidance_start}, {infusenet_guidance_end}]")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be pil, np, pt or latent, not {output_type!r}")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {sorted(unknown)} are not among "
                             f"{self._callback_tensor_inputs}")
        if max_sequence_length > 512:
            raise ValueError(f"max_sequence_length must be at most 512, got {max_sequence_length}")
        n = (len(prompt) if isinstance(prompt, list) else 1) if prompt is not None else prompt_embeds.shape[0]
        seeds = len(seed) if isinstance(seed, (list, tuple)) and generator is None else 1
        if seeds > 1 and n == 1 and num_images_per_prompt == 1:  # one prompt, several seeds: the prompt repeats
            n = seeds
        batch = n * num_images_per_prompt
        for name, value in (("seed", seed), ("generator", generator)):
            if isinstance(value, (list, tuple)) and len(value) not in (1, batch):
                raise ValueError(f"{len(value)} {name}s for {batch} images ({n} prompts x {num_images_per_prompt})")
        if latents is not None and latents.shape[0] != batch:
            raise ValueError(f"latents hold {latents.shape[0]} images, the call makes {batch}")
        return batch

    @torch.no_grad()
    def __call__(self, id_image: Image.Image | None = None, prompt: str | list[str] | None = None,
                 control_image: Image.Image | None = None, prompt_2: str | list[str] | None = None,
                 width: int = G["width"], height: int = G["height"], num_inference_steps: int = G["steps"],
                 sigmas: list[float] | None = None, guidance_scale: float = G["guidance"],
                 num_images_per_prompt: int = 1, seed: int | list[int] = 0,
                 generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
                 prompt_embeds: torch.Tensor | None = None, pooled_prompt_embeds: torch.Tensor | None = None,
                 id_embedding: torch.Tensor | None = None, infusenet_conditioning_scale: float = G["scale"],
                 infusenet_guidance_start: float = G["start"], infusenet_guidance_end: float = G["end"],
                 output_type: str = "pil", return_dict: bool = True, joint_attention_kwargs: dict | None = None,
                 callback_on_step_end=None, callback_on_step_end_tensor_inputs: list[str] = ("latents",),
                 max_sequence_length: int = 512, skip_outside_window: bool = True, regions: list | None = None):
        """Generate images of the person in ``id_image`` following ``prompt``, called like diffusers'
        ``FluxPipeline``, with InfU's own arguments (the defaults are InfU v1.0's).

        - ``id_image``: a photo of the person (its largest face gives the identity), or ``id_embedding``
          (``[1, D]``, e.g. stored by curation) instead; several people: a list of photos (or of
          embeddings), each placed in its own of ``regions`` (boxes ``(x1, y1, x2, y2)`` in output pixels
          or mask images; default: equal vertical strips, left to right), its InfuseNet residuals added
          only there (``infu_model/regions.py``); one person is the single-ID call exactly;
        - ``prompt`` (str or list) / ``prompt_2`` (T5's, default the same), or ``prompt_embeds`` with
          ``pooled_prompt_embeds`` (from ``encode_prompt``) instead;
        - ``control_image``: a photo whose face position the output follows (its five keypoints are
          drawn on black; with several people, the keypoints of as many of its largest faces); none:
          free placement (an all-black control, as InfU does);
        - ``num_images_per_prompt`` images for each prompt; randomness: ``seed`` (InfU's: one CPU
          ``torch.Generator`` per image, so a batch equals its single calls; an int gives the images
          of a prompt ``seed, seed + 1, ...``; a list gives one seed per image), or diffusers'
          ``generator`` (one, or one per image; it wins over ``seed``); ``latents`` (packed, as
          ``prepare_latents`` makes them) skip the first draw, and the control image's VAE noise is
          drawn from the generators as always (pass the generator that drew the latents to reproduce);
        - ``infusenet_conditioning_scale`` and the window ``[infusenet_guidance_start,
          infusenet_guidance_end]`` (fractions of the steps) in which InfuseNet's residuals are added;
          steps outside it skip InfuseNet (``skip_outside_window=False`` computes and zeroes them, as
          the official pipeline does: the same image);
        - ``sigmas`` (default InfU's linear schedule), ``guidance_scale`` (the base's embedded guidance),
          ``joint_attention_kwargs`` (e.g. ``{"scale": s}`` for LoRAs), ``max_sequence_length``;
        - ``callback_on_step_end(pipe, i, t, tensors)`` after each step with the tensors named in
          ``callback_on_step_end_tensor_inputs`` (``latents``, ``prompt_embeds``); it may return
          replacements; ``pipe._interrupt = True`` stops the loop;
        - ``output_type``: ``pil``, ``np``, ``pt`` or ``latent`` (packed latents); ``return_dict``:
          an ``InfUPipelineOutput`` (``.images``) or a tuple ``(images,)``.
        """
        batch = self.check_inputs(id_image, id_embedding, prompt, prompt_embeds, pooled_prompt_embeds, width, height,
                                  num_images_per_prompt, seed, generator, latents, infusenet_guidance_start,
                                  infusenet_guidance_end, output_type, callback_on_step_end_tensor_inputs,
                                  max_sequence_length)
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if prompts is not None and len(prompts) == 1 and batch > num_images_per_prompt:
            prompts = prompts * (batch // num_images_per_prompt)  # one prompt, several seeds
        per_prompt = num_images_per_prompt if prompt_embeds is None else 1  # given embeddings are repeated below
        generators = self._generators(seed, generator, batch, num_images_per_prompt)
        device, dtype = self._execution_device, self.transformer.dtype
        self._guidance_scale, self._joint_attention_kwargs, self._interrupt = guidance_scale, joint_attention_kwargs, False
        lora_scale = (joint_attention_kwargs or {}).get("scale")

        # once per call: prompt embeddings, ID tokens, latents, control latent
        prompt_embeds, pooled, text_ids = self.encode_prompt(
            prompt=prompts, prompt_2=prompt_2, device=device, num_images_per_prompt=per_prompt,
            prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            max_sequence_length=max_sequence_length, lora_scale=lora_scale)
        if prompt_embeds.shape[0] != batch:  # given embeddings: each row for its images
            reps = batch // prompt_embeds.shape[0]
            prompt_embeds, pooled = prompt_embeds.repeat_interleave(reps, 0), pooled.repeat_interleave(reps, 0)
        latents, img_ids = self.prepare_latents(batch, self.transformer.config.in_channels // 4, height, width,
                                                prompt_embeds.dtype, device,
                                                generators if len(generators) > 1 else generators[0], latents)
        embeddings = (id_embedding if isinstance(id_embedding, (list, tuple)) else [id_embedding]) \
            if id_embedding is not None else [self.id_embedding(im) for im in
                                              (id_image if isinstance(id_image, (list, tuple)) else [id_image])]
        id_tokens = [self.image_proj(e.to(device)).to(dtype).expand(batch, -1, -1) for e in embeddings]
        masks = None
        if len(id_tokens) > 1 or regions is not None:  # several people: each identity within its region
            regions = regions if regions is not None else default_regions(len(id_tokens), width, height)
            if len(regions) != len(id_tokens):
                raise ValueError(f"{len(regions)} regions for {len(id_tokens)} identities")
            masks = token_masks(regions, width, height, self.vae_scale_factor * 2).to(device)
        control = self.encode_control(self.control_image(control_image, width, height, faces=len(id_tokens)),
                                      generators * (batch if len(generators) == 1 else 1), device, dtype)

        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps) if sigmas is None else sigmas
        mu = calculate_shift(latents.shape[1], self.scheduler.config.get("base_image_seq_len", 256),
                             self.scheduler.config.get("max_image_seq_len", 4096),
                             self.scheduler.config.get("base_shift", 0.5), self.scheduler.config.get("max_shift", 1.15))
        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device,
                                                            sigmas=sigmas, mu=mu)
        guidance = (torch.full([batch], guidance_scale, device=device, dtype=torch.float32)
                    if self.transformer.config.guidance_embeds else None)
        infu_guidance = torch.ones([batch], device=device, dtype=torch.float32)
        self.scheduler.set_begin_index(0)
        n = self._num_timesteps = len(timesteps)
        with self.progress_bar(total=n) as bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                timestep = t.expand(batch).to(latents.dtype) / 1000
                keep = in_window(i, n, infusenet_guidance_start, infusenet_guidance_end)
                double = single = None
                # a step whose residuals would be multiplied by zero (outside the window, or scale 0) skips InfuseNet
                if (keep and infusenet_conditioning_scale != 0) or not skip_outside_window:
                    residuals = [infusenet_residuals(
                        self.infusenet, latents=latents, control=control, id_tokens=tokens, pooled=pooled,
                        timestep=timestep, img_ids=img_ids, guidance=infu_guidance,
                        scale=infusenet_conditioning_scale * float(keep)) for tokens in id_tokens]
                    double, single = residuals[0] if masks is None else combine(residuals, masks)
                noise = self.transformer(
                    hidden_states=latents, timestep=timestep, guidance=guidance, pooled_projections=pooled,
                    encoder_hidden_states=prompt_embeds, txt_ids=text_ids, img_ids=img_ids,
                    controlnet_block_samples=double, controlnet_single_block_samples=single,
                    joint_attention_kwargs=joint_attention_kwargs, return_dict=False)[0]
                latents = self.scheduler.step(noise, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    named = {"latents": latents, "prompt_embeds": prompt_embeds}
                    given = callback_on_step_end(self, i, t, {k: named[k] for k in callback_on_step_end_tensor_inputs})
                    latents = (given or {}).get("latents", latents)
                    prompt_embeds = (given or {}).get("prompt_embeds", prompt_embeds)
                bar.update()
        self._current_timestep = None
        if output_type == "latent":
            image = latents
        else:
            latents = self._unpack_latents(latents, height, width, self.vae_scale_factor)
            latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
            image = self.image_processor.postprocess(self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0],
                                                     output_type=output_type)
        self.maybe_free_model_hooks()  # offloading: everything back to the CPU
        return InfUPipelineOutput(images=image) if return_dict else (image,)

    @staticmethod
    def _generators(seed, generator, batch: int, per_prompt: int) -> list[torch.Generator]:
        """The call's generators: the caller's, or one CPU generator per image from ``seed``."""
        if generator is not None:
            return list(generator) if isinstance(generator, (list, tuple)) else [generator]
        if isinstance(seed, (list, tuple)):
            seeds = list(seed) * (batch if len(seed) == 1 else 1)
        else:
            seeds = [int(seed) + j for _ in range(batch // per_prompt) for j in range(per_prompt)]
        return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    # ------------------------------------------------------------------ extras --
    def load_loras(self, loras: list[tuple[str, float]]) -> None:
        """Stack LoRAs on the base transformer: [(model reference, weight), ...] (peft via diffusers)."""
        names = []
        for k, (path, _) in enumerate(loras):
            self.load_lora_weights(str(hub.resolve(path, FOLDER)), adapter_name=f"lora{k}")
            names.append(f"lora{k}")
        if names:
            self.set_adapters(names, adapter_weights=[w for _, w in loras])

    def quantize_weights(self, weights: str, device="cpu") -> "InfUPipeline":
        """The linear layers of the transformer and InfuseNet in 8 bits (``int8``: weight-only) or in
        FP8 (``fp8``: dynamic activations and weights, row-wise scales; on ``device``, which must have
        FP8) with torchao; ``native`` leaves them. LoRA layers keep their dtype (they can be switched)."""
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, not {weights!r}")
        if weights == "native":
            return self
        if weights == "fp8":
            check_fp8(device)
        try:
            from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig,
                                              PerRow, quantize_)
        except ImportError as e:
            raise ImportError("8-bit and FP8 weights need torchao: pip install 'infu-engine[quant]'") from e

        def big_linear(module, name: str) -> bool:  # FP8 row-wise wants dims in multiples of 16
            return (isinstance(module, torch.nn.Linear) and "lora_" not in name
                    and module.in_features % 16 == 0 and module.out_features % 16 == 0)

        if weights == "int8":
            config, where = Int8WeightOnlyConfig(), None
        else:
            config, where = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), torch.device(device)
        for model in (self.transformer, self.infusenet):
            quantize_(model, config, filter_fn=big_linear, device=where)
        return self

    def save_infu(self, out: str | Path, face_backend: str | None = None) -> None:
        """Our native layout: infusenet/ + image_proj/ + infu.json."""
        out = Path(out)
        self.infusenet.save_pretrained(out / "infusenet")
        self.image_proj.save_pretrained(out / "image_proj")
        self._write_meta(out, face_backend=face_backend or self.infu_meta.get("face_backend", "insightface"))

    def set_memory(self, device, text_encoders: str = "gpu", offload: str = "none") -> "InfUPipeline":
        """Where the weights live while generating (the image is the same in every mode); call it once,
        on a pipeline loaded on the CPU:

        - ``text_encoders``: ``gpu`` (resident) or ``offload``: T5 stays in CPU memory and streams to
          ``device`` one block at a time while a prompt is encoded (diffusers' group offloading,
          copies overlapped with compute on CUDA), so it never sits whole beside the transformer;
        - ``offload``: ``none``; ``model`` (diffusers' model CPU offload: each model visits the GPU
          when it runs); ``low_vram`` (group offloading of every model, block by block: the least
          memory that stays usable; the 85 M-parameter projection stays on the GPU); ``sequential``
          (layer by layer: least memory, slowest)."""
        if text_encoders not in TEXT_ENCODERS:
            raise ValueError(f"text_encoders must be one of {TEXT_ENCODERS}, not {text_encoders!r}")
        if offload not in OFFLOAD:
            raise ValueError(f"offload must be one of {OFFLOAD}, not {offload!r}")
        device = torch.device(device)
        streams = dict(onload_device=device, offload_type="block_level", num_blocks_per_group=1,
                       use_stream=device.type == "cuda")
        if offload == "model":
            self.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            self.enable_sequential_cpu_offload(device=device)
        elif offload == "low_vram":
            # the projection's blocks are called part by part (its published layout), which block-level hooks miss
            self.enable_group_offload(exclude_modules=["image_proj"], **streams)
        elif text_encoders == "offload":
            from diffusers.hooks import apply_group_offloading

            self.to(device)
            # block-level hooks look at direct children: T5's 24 blocks sit in encoder.block, one level down
            # (hooked on the whole model, T5 would move as one 9 GiB group); CLIP-L is 0.25 GB and stays
            apply_group_offloading(self.text_encoder_2.to("cpu").encoder, **streams)
        else:
            self.to(device)
        return self

    def use_memory_plan(self, plan: MemoryPlan, device) -> "InfUPipeline":
        """A memory mode (infu_model.memory): weights quantized, models placed or offloaded, blocks
        compiled. On the CPU only the weights change (offloading there would cost time, save nothing)."""
        self.quantize_weights(plan.weights, device)
        if torch.device(device).type == "cpu":
            self.set_memory(device)
        else:
            if plan.offload != "none" or plan.text_encoders == "offload":
                self.to("cpu")  # offloading starts from weights in CPU memory
            self.set_memory(device, plan.text_encoders, plan.offload)
        self.memory_plan = plan
        return self.compile_blocks() if plan.compile else self

    def compile_blocks(self, fuse_qkv: bool = True, **options) -> "InfUPipeline":
        """``torch.compile`` of every FLUX block in the transformer and InfuseNet (regional: one compiled
        graph serves all blocks of a kind, so compiling takes seconds, not minutes; inductor's on-disk
        cache spares later processes even that), with the q/k/v projections fused into one matmul.
        ``options`` go to ``torch.compile`` (default ``fullgraph=True``)."""
        for model in (self.transformer, self.infusenet):
            if fuse_qkv:
                model.fuse_qkv_projections()
            for block in model.modules():
                if type(block).__name__ in FluxTransformer2DModel._repeated_blocks:
                    block.compile(**{"fullgraph": True, **options})
        return self


def export_published(infusenet: FluxControlNetModel, proj: ProjectionNetwork, out: str | Path,
                     variant: str = "aes_stage2", max_shard_size: str = "10GB") -> Path:
    """Write ``out/<variant>/{InfuseNetModel/, image_proj_model.bin}`` like the published release."""
    d = Path(out) / variant
    infusenet.save_pretrained(d / "InfuseNetModel", max_shard_size=max_shard_size)
    proj.save_infu_bin(d / "image_proj_model.bin")
    return d


def load_pipeline(base, infu, variant: str = "aes_stage2", dtype: str = "bfloat16", device: str = "cuda",
                  faces: dict | None = None, loras: list[tuple[str, float]] = (), *, memory: str = "auto",
                  compile: bool = False, log=None) -> InfUPipeline:
    """An ``InfUPipeline`` ready to run: weights, LoRAs, the memory mode (infu_model.memory: ``log``
    hears what ``auto`` chose) and compiled blocks, on ``device`` (the CPU when no GPU is there).
    A mode the hardware cannot run is refused before any weight loads."""
    device = torch_device(device)
    plan, why = resolve(memory, device)  # refuses a mode this device cannot run
    if log is not None:
        log(why)
    if faces and "insightface" in faces:  # face models run where the pipeline runs
        faces = {**faces, "insightface": {**faces["insightface"], "device": device}}
    pipe = InfUPipeline.from_pretrained(base, infu, variant=variant, torch_dtype=getattr(torch, dtype),
                                        face_analyzer=faces)
    if loras:
        pipe.load_loras(list(loras))
    pipe.use_memory_plan(plan, device)
    return pipe.compile_blocks() if compile and not plan.compile else pipe
