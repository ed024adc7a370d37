"""`infu train`: stage-1 pretraining / stage-2 SFT of InfuseNet + projection on Ray Train.

Data: SPSS or SPMS Parquet, one aspect-ratio bucket per micro-batch. ``loader: ray``
(default) streams each worker's files through Ray Data in a seeded order with a
seeded local shuffle buffer and buckets rows on the fly; ``loader: plan`` shuffles
row references globally and reads them by random access. Both orders are pure
functions of the seed, so a resumed run streams the same batches and skips the
ones already trained on. Rows that cannot be used (no or wrong-size identity
embedding, undecodable image) are skipped with a counted reason.

Checkpoints (``OUT/checkpoints/step-N/``): InfuseNet + projection in our native
layout (loadable by ``InfUPipeline``), optimiser, LR scheduler, step, batch
position and every RNG state; a restarted run resumes from the latest one and,
on CPU, continues with the same losses as an uninterrupted run. Logs: JSONL +
CSV (loss, lr, samples/s, GPU memory), a loss curve PNG at the end.
"""
from __future__ import annotations

import io
import json
import math
import random
import shutil
import time
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from infu_model.infusenet import build_infusenet
from infu_model.projection import ProjectionNetwork
from infu_model.train_data import bucket_batches, control_for, sample_caption, to_bucket
from infu_model.training import FlowBatch, adamw, flow_matching_loss, freeze, sample_t


class Skip(Exception):
    """A record that cannot be trained on; the message is its reason code."""


# ------------------------------------------------------------------ data ---
def parquet_files(path: str | Path) -> list[str]:
    p = Path(path)
    files = sorted(str(f) for f in (p / "kept").glob("*.parquet")) or sorted(str(f) for f in p.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no training Parquet under {p}")
    return files


def row_index(files: list[str]) -> list[tuple[int, int, str]]:
    """(file, row, bucket) for every row: the only columns the batch plan needs."""
    out = []
    for fi, f in enumerate(files):
        for ri, b in enumerate(pq.read_table(f, columns=["bucket"])["bucket"].to_pylist()):
            out.append((fi, ri, b or ""))
    return out


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def batch_plan(files: list[str], columns: list[str], micro: int, seed: int, rank: int = 0, world: int = 1,
               skip: int = 0):
    """``loader: plan``: endless micro-batches of rows, one bucket each, from a global per-epoch shuffle
    of row references (random access: exact everywhere, right for one machine's worth of data).
    The first ``skip`` micro-batches are passed over without reading a row."""
    index, reader = row_index(files), RowReader(files, columns)
    epoch, k = 0, 0
    while True:
        mine = [index[i] for i in epoch_order(len(index), seed, epoch)[rank::world]]
        for refs in bucket_batches(({"ref": (f, r), "bucket": b} for f, r, b in mine), micro, drop_last=True):
            k += 1
            if k > skip:
                yield [reader(ref["ref"]) for ref in refs]
        epoch += 1


def stream_batches(files: list[str], columns: list[str], micro: int, seed: int, rank: int = 0, world: int = 1,
                   skip: int = 0, shuffle_buffer: int = 1000):
    """``loader: ray``: endless micro-batches of rows streamed by Ray Data, one bucket each.

    Every epoch reads this worker's files (a seeded shuffle of the file list, dealt out by rank)
    in order, mixes rows in a seeded local shuffle buffer and groups them by bucket on the fly:
    sequential reads and bounded memory however large the data. The order is a pure function of
    the seed, so a resumed run streams the same batches and skips the first ``skip`` (read, not
    prepared)."""
    import ray
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True
    names = pq.read_schema(files[0]).names
    columns = [c for c in columns if c in names]
    epoch, k = 0, 0
    while True:
        order = [files[i] for i in epoch_order(len(files), seed, epoch)]
        mine = order[rank::world] if len(order) >= world else order
        ds = ray.data.read_parquet(mine, num_cpus=0.25).select_columns(columns)
        batches = ds.iter_batches(batch_size=64, batch_format="pyarrow", local_shuffle_buffer_size=shuffle_buffer or None,
                                  local_shuffle_seed=seed + epoch)
        rows = (r for b in batches for r in b.to_pylist())
        if len(order) < world:  # fewer files than workers: deal rows instead
            rows = (r for i, r in enumerate(rows) if i % world == rank)
        for batch in bucket_batches(({**r, "bucket": r["bucket"] or ""} for r in rows), micro, drop_last=True):
            k += 1
            if k > skip:
                yield batch
        epoch += 1


class RowReader:
    """Reads rows by (file, row) with the last few files' tables cached."""

    def __init__(self, files: list[str], columns: list[str], cache: int = 2):
        self.files, self.columns, self.cache = files, columns, OrderedDict()
        self.size = cache

    def __call__(self, ref) -> dict:
        f, r = ref
        if f not in self.cache:
            schema = pq.read_schema(self.files[f]).names
            self.cache[f] = pq.read_table(self.files[f], columns=[c for c in self.columns if c in schema])
            if len(self.cache) > self.size:
                self.cache.popitem(last=False)
        self.cache.move_to_end(f)
        return self.cache[f].slice(r, 1).to_pylist()[0]


def bucket_size(bucket: str, max_side: int | None, multiple: int) -> tuple[int, int]:
    w, h = (int(x) for x in bucket.split("x"))
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = max(multiple, round(w * s / multiple) * multiple), max(multiple, round(h * s / multiple) * multiple)
    return w, h


def prepare(row: dict, data: dict, emb_dim: int, size, rng: random.Random):
    emb = row.get(data["embedding_column"])
    if emb is None:
        raise Skip("missing_embedding")
    if len(emb) != emb_dim:
        raise Skip("embedding_dim")
    if data.get("embedding_backend") and row.get("id_backend") not in (None, data["embedding_backend"]):
        raise Skip("embedding_backend")
    try:
        from PIL import Image

        img = Image.open(io.BytesIO(row[data["image_column"]]))
        img.load()
    except Exception:  # noqa: BLE001 - any undecodable bytes are a skip reason, not a crash
        raise Skip("decode_error") from None
    img, kps = to_bucket(img, size, row.get(data["kps_column"]))
    control = control_for(size, kps, float(data["black_control_prob"]), rng)
    return {"image": img, "control": control, "black": kps is None or not np.asarray(control).any(),
            "caption": sample_caption(row.get("captions"), data["caption_weights"], float(data["caption_dropout"]), rng),
            "emb": torch.tensor(emb, dtype=torch.float32), "id": row[data.get("id_column", "id")], "size": size}


# ---------------------------------------------------------------- caches ---
class EncoderCache:
    """What the frozen encoders make, kept on disk so training does not rerun them:
    T5 + CLIP embeddings per caption text, and (optionally) the VAE posterior
    parameters (mean and log-variance) of each target and control image at its bucket
    size. Sampling from cached parameters with the same generator gives exactly the
    latents an uncached run draws."""

    def __init__(self, root: str | Path | None, latents: bool = False):
        self.root = Path(root) if root else None
        self.latents = latents and self.root is not None

    @staticmethod
    def _key(text: str) -> str:
        import hashlib

        return hashlib.sha1(text.encode()).hexdigest()[:24]

    def _get(self, path: Path):
        if self.root is None or not path.is_file():
            return None
        from safetensors.torch import load_file

        return load_file(path)

    def _put(self, path: Path, tensors: dict) -> None:
        if self.root is None:
            return
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        tmp.replace(path)

    def text(self, text: str):
        return self._get(self.root / "text" / f"{self._key(text)}.safetensors") if self.root else None

    def put_text(self, text: str, prompt: torch.Tensor, pooled: torch.Tensor) -> None:
        if self.root:
            self._put(self.root / "text" / f"{self._key(text)}.safetensors", {"prompt": prompt, "pooled": pooled})

    def _lat_path(self, kind: str, key: str, size) -> Path:
        return self.root / "latents" / f"{kind}-{self._key(key)}-{size[0]}x{size[1]}.safetensors"

    def params(self, kind: str, key: str, size):
        return self._get(self._lat_path(kind, key, size)) if self.latents else None

    def put_params(self, kind: str, key: str, size, params: torch.Tensor) -> None:
        if self.latents:
            self._put(self._lat_path(kind, key, size), {"params": params})


# ---------------------------------------------------------------- models ---
def load_base(cfg: dict, device):
    """The frozen FLUX pipeline (transformer, VAE, both text encoders)."""
    from diffusers import FluxPipeline

    m = cfg["model"]
    if not m.get("base"):
        raise ValueError("model.base: the FLUX base folder is required")
    dtype = getattr(torch, m.get("dtype", "bfloat16")) if device != "cpu" else torch.float32
    base = FluxPipeline.from_pretrained(m["base"], torch_dtype=dtype, local_files_only=True).to(device)
    for part in (base.transformer, base.vae, base.text_encoder, base.text_encoder_2):
        freeze(part)
    return base


def load_models(cfg: dict, device):
    """The frozen base plus the trainable InfuseNet and projection network."""
    m = cfg["model"]
    base = load_base(cfg, device)
    if m.get("init"):
        from infu_model.pipeline import load_infu_weights

        net, proj, _ = load_infu_weights(m["init"], m.get("init_variant", "aes_stage2"))
    else:
        torch.manual_seed(int(cfg.get("seed", 0)))
        net = build_infusenet(base.transformer, int(m.get("multiplication_factor", 4)))
        proj = ProjectionNetwork(embedding_dim=int(m.get("embedding_dim", 512)),
                                 output_dim=base.transformer.config.joint_attention_dim)
    net, proj = net.float().to(device).train(), proj.float().to(device).train()
    if m.get("gradient_checkpointing"):
        net.enable_gradient_checkpointing()
    return base, net, proj


@torch.no_grad()
def posterior_params(base, images, device) -> torch.Tensor:
    x = base.image_processor.preprocess(images).to(device, base.vae.dtype)
    return base.vae.encode(x).latent_dist.parameters


@torch.no_grad()
def text_embeddings(base, captions: list[str], max_len: int, device, cache: EncoderCache):
    hits = [cache.text(c) for c in captions]
    if all(h is not None for h in hits):
        prompt = torch.stack([h["prompt"] for h in hits]).to(device, base.transformer.dtype)
        pooled = torch.stack([h["pooled"] for h in hits]).to(device, base.transformer.dtype)
        return prompt, pooled, torch.zeros(prompt.shape[1], 3, device=device, dtype=base.transformer.dtype)
    prompt, pooled, text_ids = base.encode_prompt(captions, prompt_2=None, device=device, max_sequence_length=max_len)
    for c, p, q in zip(captions, prompt, pooled):
        cache.put_text(c, p, q)
    return prompt, pooled, text_ids


@torch.no_grad()
def encode(base, samples: list[dict], gen: torch.Generator, max_len: int, device,
           cache: EncoderCache | None = None) -> FlowBatch:
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    cache = cache or EncoderCache(None)
    dtype = base.transformer.dtype

    def params(kind: str, images, keys):
        hits = [cache.params(kind, k, s["size"]) for k, s in zip(keys, samples)]
        if all(h is not None for h in hits):
            return torch.stack([h["params"] for h in hits]).to(device, base.vae.dtype)
        p = posterior_params(base, images, device)
        for k, s, one in zip(keys, samples, p):
            cache.put_params(kind, k, s["size"], one)
        return p

    def lat(p):
        z = DiagonalGaussianDistribution(p).sample(gen)
        z = ((z - base.vae.config.shift_factor) * base.vae.config.scaling_factor).to(dtype)
        b, c, h, w = z.shape
        return base._pack_latents(z, b, c, h, w), (c, h, w)

    x0, (c, h, w) = lat(params("image", [s["image"] for s in samples], [s["id"] for s in samples]))
    control, _ = lat(params("control", [s["control"] for s in samples],
                            ["black" if s["black"] else s["id"] for s in samples]))
    prompt, pooled, text_ids = text_embeddings(base, [s["caption"] for s in samples], max_len, device, cache)
    img_ids = base._prepare_latent_image_ids(x0.shape[0], h // 2, w // 2, device, dtype)
    return FlowBatch(latents=x0, control=control, id_embedding=torch.stack([s["emb"] for s in samples]).to(device),
                     prompt_embeds=prompt, pooled=pooled, text_ids=text_ids, img_ids=img_ids)


# ------------------------------------------------------------ checkpoints ---
def rng_state(py: random.Random, gen: torch.Generator) -> dict:
    return {"python": py.getstate(), "torch_gen": gen.get_state(), "torch": torch.get_rng_state(),
            "numpy": np.random.get_state()}


def save_checkpoint(out: Path, step: int, batches: int, net, proj, opt, sched, py, gen, skipped: Counter, keep: int):
    d = out / "checkpoints" / f"step-{step:08d}"
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp / "infusenet")
    proj.save_pretrained(tmp / "image_proj")
    torch.save({"step": step, "batches": batches, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": rng_state(py, gen), "skipped": dict(skipped)}, tmp / "trainer_state.pt")
    (tmp / "infu.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)  # a checkpoint exists whole or not at all
    for old in sorted((out / "checkpoints").glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in (out / "checkpoints").glob("step-*") if not p.name.endswith(".tmp"))
    return found[-1] if found else None


LOADERS = {"ray": stream_batches, "plan": batch_plan}


# ------------------------------------------------------------- the loop ---
def train_loop(cfg: dict) -> dict:
    """One worker's training loop (Ray Train runs it on every worker)."""
    try:
        import ray.train as rt

        ctx = rt.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
    except Exception:  # noqa: BLE001 - plain call outside Ray Train
        rank, world = 0, 1
    device = "cuda" if torch.cuda.is_available() and cfg["ray"].get("use_gpu") else "cpu"
    out = Path(cfg["output"])
    t, data = cfg["train"], cfg["data"]
    seed = int(cfg.get("seed", 0))
    base, net, proj = load_models(cfg, device)
    if world > 1 and device == "cuda" and cfg["ray"].get("fsdp", True):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        net, proj = FSDP(net), FSDP(proj)
    params = [p for p in list(net.parameters()) + list(proj.parameters()) if p.requires_grad]
    opt = adamw(params, float(t["lr"]), float(t.get("weight_decay", 0.01)))
    from diffusers.optimization import get_scheduler

    sched = get_scheduler("constant_with_warmup", opt, num_warmup_steps=int(t["warmup_steps"]))
    accum = max(1, int(t["global_batch_size"]) // (int(t["micro_batch_size"]) * world))
    py, gen = random.Random(seed + rank), torch.Generator().manual_seed(seed + rank)
    step, consumed, skipped = 0, 0, Counter()
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        net.load_state_dict(type(net).from_pretrained(ckpt / "infusenet").state_dict())
        proj.load_state_dict(ProjectionNetwork.from_pretrained(ckpt / "image_proj").state_dict())
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, consumed, skipped = state["step"], state["batches"], Counter(state["skipped"])
        py.setstate(state["rng"]["python"])
        gen.set_state(state["rng"]["torch_gen"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
    files = parquet_files(data["parquet"])
    columns = [data["image_column"], data["kps_column"], data["embedding_column"], "captions", "bucket",
               data.get("id_column", "id"), "id_backend"]
    loader = data.get("loader", "ray")
    if loader not in LOADERS:
        raise ValueError(f"data.loader must be one of {sorted(LOADERS)}, not {loader!r}")
    plan = LOADERS[loader](files, columns, int(t["micro_batch_size"]), seed, rank, world, skip=consumed,
                           **({"shuffle_buffer": int(data.get("shuffle_buffer", 1000))} if loader == "ray" else {}))
    mult = base.vae_scale_factor * 2
    cc = cfg.get("cache") or {}
    cache = EncoderCache(cc.get("dir") or out / "cache", bool(cc.get("latents"))) if cc.get("enabled") else EncoderCache(None)
    log_path = out / "train_log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    losses = []
    while step < int(t["max_steps"]):
        t0, total, n = time.perf_counter(), 0.0, 0
        for _ in range(accum):
            samples = []
            while not samples:
                rows = next(plan)
                consumed += 1
                size = bucket_size(rows[0]["bucket"], data.get("max_side"), mult)
                for row in rows:
                    try:
                        samples.append(prepare(row, data, proj.config.embedding_dim, size, py))
                    except Skip as e:
                        skipped[str(e)] += 1
            batch = encode(base, samples, gen, int(data.get("max_sequence_length", 512)), device, cache)
            tt = sample_t(len(samples), gen, float(t["logit_mean"]), float(t["logit_std"])).to(device)
            noise = torch.randn(batch.latents.shape, generator=gen).to(device, batch.latents.dtype)
            loss = flow_matching_loss(base.transformer, net, proj, batch, guidance_scale=float(t["guidance_scale"]),
                                      t=tt, noise=noise) / accum
            loss.backward()
            total += loss.item()
            n += len(samples)
        torch.nn.utils.clip_grad_norm_(params, float(t["grad_clip"]))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        losses.append(total)
        rec = {"step": step, "loss": total, "lr": sched.get_last_lr()[0], "samples_per_s": n * world / (time.perf_counter() - t0),
               "gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0,
               "skipped": dict(skipped)}
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if step % int(t["checkpoint_every"]) == 0 or step == int(t["max_steps"]):
                save_checkpoint(out, step, consumed, net, proj, opt, sched, py, gen, skipped, int(t["keep_checkpoints"]))
    if rank == 0:
        finish(out, net, proj, bool(cfg.get("export_published")), cfg["model"].get("face_backend", "insightface"))
    return {"step": step, "losses": losses, "skipped": dict(skipped)}


def finish(out: Path, net, proj, export_published: bool, face_backend: str) -> None:
    """Final weights (native layout, loads in InfUPipeline), CSV log and loss curve."""
    final = out / "final"
    net.save_pretrained(final / "infusenet")
    proj.save_pretrained(final / "image_proj")
    (final / "infu.json").write_text(json.dumps({"trained_by": "infu train", "face_backend": face_backend}))
    if export_published:
        from infu_model.pipeline import export_published as export

        export(net, proj, out / "published")
    recs = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    with open(out / "train_log.csv", "w") as f:
        f.write("step,loss,lr,samples_per_s,gpu_mem_gib\n")
        for r in recs:
            f.write(f"{r['step']},{r['loss']},{r['lr']},{r['samples_per_s']},{r['gpu_mem_gib']}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in recs], [r["loss"] for r in recs])
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=100)
    plt.close(fig)


@torch.no_grad()
def build_cache(cfg: dict, batch: int = 8) -> dict:
    """The optional pre-pass: every caption's text embeddings (the empty caption for
    dropout included) and, with ``cache.latents``, each row's VAE posterior at its
    bucket size (target, keypoint control, black control)."""
    cc, data = cfg.get("cache") or {}, cfg["data"]
    cache = EncoderCache(cc.get("dir") or Path(cfg["output"]) / "cache", bool(cc.get("latents")))
    device = "cuda" if torch.cuda.is_available() and cfg["ray"].get("use_gpu") else "cpu"
    base = load_base(cfg, device)  # the pre-pass needs only the frozen encoders
    emb_dim = int(cfg["model"].get("embedding_dim", 512))
    files = parquet_files(data["parquet"])
    texts, counts = {""}, Counter()
    for f in files:
        for caps in pq.read_table(f, columns=["captions"])["captions"].to_pylist():
            texts.update(c["text"] for c in caps or [] if data["caption_weights"].get(c["source"], 0) > 0)
    todo = [t for t in sorted(texts) if cache.text(t) is None]
    for i in range(0, len(todo), batch):
        text_embeddings(base, todo[i:i + batch], int(data.get("max_sequence_length", 512)), device, cache)
    counts["texts"] = len(texts)
    if cache.latents:
        mult = base.vae_scale_factor * 2
        reader = RowReader(files, [data["image_column"], data["kps_column"], data["embedding_column"], "captions",
                                   "bucket", data.get("id_column", "id"), "id_backend"])
        for fi, ri, bucket in row_index(files):
            size = bucket_size(bucket, data.get("max_side"), mult)
            try:
                s = prepare(reader((fi, ri)), {**data, "black_control_prob": 0.0}, emb_dim, size,
                            random.Random(0))
            except Skip as e:
                counts[f"skipped_{e}"] += 1
                continue
            from infu_model.control import black_control

            for kind, key, img in (("image", s["id"], s["image"]), ("control", s["id"], s["control"]),
                                   ("control", "black", black_control(size))):
                if cache.params(kind, key, size) is None:
                    cache.put_params(kind, key, size, posterior_params(base, [img], device)[0])
            counts["rows"] += 1
    return {"dir": str(cache.root), **counts}


def run_train(cfg: dict, ray_address: str | None = None) -> dict:
    """Launch ``train_loop`` on Ray Train's TorchTrainer (workers and GPUs from ``cfg['ray']``)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.ray_runtime import init_ray

    init_ray(ray_address, {"ray": {}, "progress": False})
    r = cfg["ray"]
    out = Path(cfg["output"]).resolve()
    # Ray Train workers do not share the caller's working directory: make every path absolute
    absolute = lambda p: str(Path(p).expanduser().resolve()) if p else p  # noqa: E731
    cfg = {**cfg, "output": str(out),
           "model": {**cfg["model"], "base": absolute(cfg["model"].get("base")), "init": absolute(cfg["model"].get("init"))},
           "data": {**cfg["data"], "parquet": absolute(cfg["data"].get("parquet"))},
           "cache": {**(cfg.get("cache") or {}), "dir": absolute((cfg.get("cache") or {}).get("dir"))}}
    trainer = TorchTrainer(train_loop, train_loop_config=cfg,
                           scaling_config=ScalingConfig(num_workers=int(r.get("num_workers", 1)),
                                                        use_gpu=bool(r.get("use_gpu", False))),
                           run_config=RunConfig(name="infu-train", storage_path=str(out / "ray")))
    trainer.fit()
    recs = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    return {"steps": recs[-1]["step"] if recs else 0, "final_loss": recs[-1]["loss"] if recs else math.nan,
            "skipped": recs[-1]["skipped"] if recs else {}, "output": str(out)}
