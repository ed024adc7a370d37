"""The frozen encoders (FLUX's T5 + CLIP text encoders and VAE) and their on-disk cache.

``encode`` turns prepared samples into a ``FlowBatch``: text embeddings of the sampled
captions and VAE posterior samples of the target and control images, every posterior
drawn from its own sample's generator. The cache holds what the encoders make so that
training need not run them: one safetensors shard per training Parquet file
(``CACHE/<file stem>.safetensors``: ``text.<sha1 of caption>.{prompt,pooled}`` for every
caption of its rows, and with ``cache.latents`` ``{image,control}.<row id>.<W>x<H>``, the
posterior parameters at the row's bucket size) plus ``CACHE/_shared.safetensors`` (the
empty caption, the black controls). A lookup opens the row's shard lazily (memory-mapped,
only the tensors asked for are read): no file or directory listing per sample, a handful
of files however many rows. Sampling from cached parameters with the same generator gives
exactly the latents an uncached run draws.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, OrderedDict
from dataclasses import replace
from pathlib import Path

import torch

from infu_model.control import black_control
from infu_model.hub import DIFFUSERS, resolve
from infu_model.storage import ObjectPath, as_path, cached_copy, parquet_file, read_parquet
from infu_model.train_data import Skip, bucket_size, prepare
from infu_model.training import FlowBatch, check_train_dtype, freeze
from pipelines.job import input_files
from pipelines.train.config import TrainConfig, TrainModelOptions
from pipelines.train.loaders import stem

SHARED = "_shared"


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def text_key(text: str) -> str:
    return f"text.{_sha(text)}"


def latent_key(kind: str, key: str, size) -> str:
    return f"{kind}.{key}.{size[0]}x{size[1]}"


class EncoderCache:
    """Reads the cache shards (see the module doc); ``root=None`` is a cache that never hits. Shards in
    object storage are memory-mapped from a copy on this machine (``storage.cached_copy``: fetched once)."""

    def __init__(self, root: str | Path | None, latents: bool = False, open_files: int = 8):
        self.root = as_path(root) if root else None
        self.latents = latents and self.root is not None
        self._open: OrderedDict = OrderedDict()
        self._size = open_files

    def _shard(self, stem: str | None):
        if self.root is None or stem is None:
            return None
        if stem not in self._open:
            path = self.root / f"{stem}.safetensors"
            if not path.is_file():
                return None
            from safetensors import safe_open

            handle = safe_open(str(cached_copy(path)), framework="pt")
            self._open[stem] = (handle, set(handle.keys()))
            if len(self._open) > self._size:
                self._open.popitem(last=False)
        self._open.move_to_end(stem)
        return self._open[stem]

    def _get(self, stem: str | None, name: str):
        shard = self._shard(stem)
        return shard[0].get_tensor(name) if shard and name in shard[1] else None

    def text(self, file: str | None, text: str):
        """(prompt, pooled) of a caption, or None."""
        stem, key = (SHARED, text_key("")) if text == "" else (file, text_key(text))
        prompt = self._get(stem, key + ".prompt")
        return None if prompt is None else (prompt, self._get(stem, key + ".pooled"))

    def params(self, kind: str, file: str | None, key: str, size):
        """Posterior parameters of a row's target (``image``) or control image at ``size``, or None."""
        if not self.latents:
            return None
        return self._get(SHARED if key == "black" else file, latent_key(kind, key, size))


def write_shard(path, tensors: dict, metadata: dict) -> None:
    """One shard, written whole under a temporary name and renamed (never half a file; an object is
    written whole)."""
    from safetensors.torch import save, save_file

    if isinstance(path, ObjectPath):
        path.write_bytes(save({k: v.contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def cache_settings(cfg: TrainConfig) -> dict:
    """What cached tensors depend on: a cache made under other settings must not be read."""
    return {"base": cfg.model.base.key, "dtype": cfg.model.dtype,
            "max_sequence_length": cfg.data.max_sequence_length}


def open_cache(cfg: TrainConfig, enabled: bool | None = None) -> EncoderCache:
    """The run's encoder cache (``cache.enabled``, or ``enabled``), refused when built under other settings."""
    if not (cfg.cache.enabled if enabled is None else enabled):
        return EncoderCache(None)
    root = cfg.cache_dir
    meta = root / "cache.json"
    if meta.is_file() and json.loads(meta.read_text()) != cache_settings(cfg):
        raise ValueError(f"the encoder cache in {root} was built with {meta.read_text().strip()}, not "
                         f"{cache_settings(cfg)}: use another cache.dir or delete it")
    return EncoderCache(root, cfg.cache.latents)


# ---------------------------------------------------------------- encoders ---
def load_base(m: TrainModelOptions, device, text_encoders_device=None):
    """The frozen FLUX pipeline (transformer, VAE, both text encoders) in ``model.dtype``; the text
    encoders on ``text_encoders_device`` (default: ``device``)."""
    from diffusers import FluxPipeline

    if not m.base:
        raise ValueError("model.base: the FLUX base folder is required")
    dtype = getattr(torch, m.dtype)
    check_train_dtype(dtype)
    base = FluxPipeline.from_pretrained(resolve(m.base, DIFFUSERS), dtype=dtype, local_files_only=True)
    for part in (base.transformer, base.vae, base.text_encoder, base.text_encoder_2):
        freeze(part)
    base.transformer.to(device)
    base.vae.to(device)
    for enc in (base.text_encoder, base.text_encoder_2):
        enc.to(text_encoders_device or device)
    return base


@torch.no_grad()
def posterior_params(base, images, device) -> torch.Tensor:
    x = base.image_processor.preprocess(images).contiguous().to(device, base.vae.dtype)
    return base.vae.encode(x).latent_dist.parameters


def _fill(found: list, compute) -> list:
    """``found`` with its None entries replaced by ``compute(indices)`` (one batched call)."""
    miss = [i for i, f in enumerate(found) if f is None]
    if miss:
        for i, value in zip(miss, compute(miss)):
            found[i] = value
    return found


@torch.no_grad()
def encode(base, samples: list[dict], gens: list[torch.Generator], max_len: int, device,
           cache: EncoderCache | None = None) -> FlowBatch:
    """A ``FlowBatch`` from prepared samples; cached encoder outputs are used where present."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    cache = cache or EncoderCache(None)
    dtype, vae = base.transformer.dtype, base.vae

    def latents(kind: str, keyed):
        found = [cache.params(kind, s["file"], key, s["size"]) for s, key in zip(samples, keyed)]
        params = _fill(found, lambda miss: posterior_params(base, [samples[i][kind] for i in miss], device))
        z = torch.cat([DiagonalGaussianDistribution(p[None].to(device, vae.dtype)).sample(g) for p, g in zip(params, gens)])
        z = ((z - vae.config.shift_factor) * vae.config.scaling_factor).to(dtype)
        b, c, h, w = z.shape
        return base._pack_latents(z, b, c, h, w), (h, w)

    x0, (h, w) = latents("image", [s["id"] for s in samples])
    control, _ = latents("control", ["black" if s["black"] else s["id"] for s in samples])
    texts = _fill([cache.text(s["file"], s["caption"]) for s in samples],
                  lambda miss: zip(*base.encode_prompt([samples[i]["caption"] for i in miss], prompt_2=None,
                                                       device=device, max_sequence_length=max_len)[:2]))
    prompt = torch.stack([p for p, _ in texts]).to(device, dtype)
    pooled = torch.stack([q for _, q in texts]).to(device, dtype)
    return FlowBatch(latents=x0, control=control, id_embedding=torch.stack([s["emb"] for s in samples]).to(device),
                     prompt_embeds=prompt, pooled=pooled,
                     text_ids=torch.zeros(prompt.shape[1], 3, device=device, dtype=dtype),
                     img_ids=base._prepare_latent_image_ids(x0.shape[0], h // 2, w // 2, device, dtype),
                     weight=torch.tensor([s["weight"] for s in samples], device=device))


# ---------------------------------------------------------------- pre-pass ---
@torch.no_grad()
def build_cache(cfg: TrainConfig, batch: int = 8) -> dict:
    """The optional pre-pass: for every training Parquet file one shard with the text embeddings of
    its rows' captions (those with a caption weight > 0) and, with ``cache.latents``, each row's VAE
    posterior at its bucket size (target and keypoint control); the shared shard holds the empty
    caption (dropout) and the black controls. A shard that exists with what is asked is kept, so
    an interrupted pre-pass resumes."""
    data, root, want_latents = cfg.data, cfg.cache_dir, cfg.cache.latents
    device = "cuda" if torch.cuda.is_available() and cfg.ray.use_gpu else "cpu"
    open_cache(cfg, enabled=True)  # refuses a cache built under other settings
    base = load_base(cfg.model, device)  # the pre-pass needs only the frozen encoders
    max_len, emb_dim = data.max_sequence_length, cfg.model.embedding_dim
    mult = base.vae_scale_factor * 2
    columns = data.columns()
    counts, sizes = Counter(), set()
    unchosen = replace(data, black_control_prob=0.0)  # every keypoint control is cached

    def texts(captions: list[str]) -> dict:
        out = {}
        for i in range(0, len(captions), batch):
            chunk = captions[i:i + batch]
            prompt, pooled, _ = base.encode_prompt(chunk, prompt_2=None, device=device, max_sequence_length=max_len)
            for c, p, q in zip(chunk, prompt, pooled):
                out[text_key(c) + ".prompt"], out[text_key(c) + ".pooled"] = p, q
        return out

    for f in input_files(data.parquet):
        name = stem(f)
        shard = root / f"{name}.safetensors"
        table = read_parquet(f, columns=[c for c in columns if c in parquet_file(f).schema_arrow.names])
        sizes.update(bucket_size(b or "", data.max_side, mult) for b in table["bucket"].to_pylist())
        if shard.is_file() and (not want_latents or _has_latents(shard)):
            counts["shards_kept"] += 1
            continue
        caps = {c["text"] for cs in table["captions"].to_pylist() for c in cs or []
                if data.caption_weights.get(c["source"], 0) > 0 and c["text"]}
        tensors = texts(sorted(caps))
        counts["texts"] += len(caps)
        if want_latents:
            for row in table.to_pylist():
                size = bucket_size(row["bucket"] or "", data.max_side, mult)
                try:
                    s = prepare({**row, "_file": name}, unchosen, emb_dim, size, random.Random(0))
                except Skip as e:
                    counts[f"skipped_{e}"] += 1
                    continue
                tensors[latent_key("image", s["id"], size)] = posterior_params(base, [s["image"]], device)[0]
                if not s["black"]:
                    tensors[latent_key("control", s["id"], size)] = posterior_params(base, [s["control"]], device)[0]
                counts["rows"] += 1
        write_shard(shard, tensors, {"latents": str(int(want_latents))})
        counts["shards_written"] += 1
    shared = texts([""])
    counts["texts"] += 1
    for size in sorted(sizes):
        shared[latent_key("control", "black", size)] = posterior_params(base, [black_control(size)], device)[0]
    write_shard(root / f"{SHARED}.safetensors", shared, {"latents": "1"})
    (root / "cache.json").write_text(json.dumps(cache_settings(cfg)))
    return {"dir": str(root), **counts}


def _has_latents(shard) -> bool:
    from safetensors import safe_open

    with safe_open(str(cached_copy(shard)), framework="pt") as f:
        return (f.metadata() or {}).get("latents") == "1"
