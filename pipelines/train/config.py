"""``configs/stage1.yaml`` and ``configs/stage2.yaml``, typed: one ``TrainConfig``."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from curation.engine import between
from infu_model.hub import DIFFUSERS, ModelRef, Need, infu_weights
from infu_model.storage import as_path, is_uri, join
from pipelines.config import JobConfig

CHECKPOINTING = {"none": (), "infusenet": ("infusenet",), "all": ("infusenet", "base")}


@dataclass(frozen=True)
class TrainModelOptions:
    base: ModelRef | None             # FLUX.1-dev in diffusers layout: path or hf://... (infu_model/hub.py)
    init: ModelRef | None             # InfU weights to start from; null: a fresh InfuseNet (i = 4) + projection
    init_variant: str                 # when ``init`` is the published layout
    embedding_dim: int = between(1)   # identity embedding size (512 ArcFace; 128 dlib)
    face_backend: str                 # the backend that made the embeddings; inference uses the same
    multiplication_factor: int = between(1)
    projection: dict                  # a fresh projection network's sizes; {}: InfU v1.0's
    dtype: Literal["bfloat16", "float32"]
    gradient_checkpointing: Literal["none", "infusenet", "all"]


@dataclass(frozen=True)
class DataOptions:
    loader: Literal["ray", "plan"]
    shuffle_buffer: int = between(0)
    parquet: str | None               # the training rows: a curate/caption (SPSS) or synth (SPMS) output
    id_column: str
    image_column: str
    kps_column: str
    embedding_column: str
    embedding_backend: str | None     # rows made by another face backend are skipped
    max_side: int | None = between(16)
    black_control_prob: float = between(0, 1)
    caption_weights: dict             # caption source -> weight
    caption_dropout: float = between(0, 1)
    max_sequence_length: int = between(1, 512)

    def columns(self) -> list[str]:
        """The columns a training row needs."""
        return [self.image_column, self.kps_column, self.embedding_column, "captions", "bucket", self.id_column,
                "id_backend"]


@dataclass(frozen=True)
class CacheOptions:
    enabled: bool
    dir: str | None                   # null: <output>/cache
    latents: bool                     # also the VAE posteriors of targets and controls


@dataclass(frozen=True)
class TrainOptions:
    """The ``train:`` block."""
    lr: float = between(0, 1)
    global_batch_size: int = between(1)
    micro_batch_size: int = between(1)
    max_steps: int = between(1)
    warmup_steps: int = between(0)
    grad_clip: float = between(0)
    weight_decay: float = between(0, 1)
    logit_mean: float
    logit_std: float = between(0)
    guidance_scale: float = between(0)
    optimizer: Literal["adamw", "adamw_8bit"]
    checkpoint_every: int = between(1)
    keep_checkpoints: int = between(1)
    log_every: int = between(1)


@dataclass(frozen=True)
class TrainRayOptions:
    num_workers: int = between(1)     # Ray Train workers: one per GPU (or CPU worker)
    use_gpu: bool
    cpus_per_worker: float = between(0)
    fsdp: bool                        # with several workers: FSDP (else DDP)
    max_failures: int = between(-1)   # worker-group failures (a lost node) Ray Train recovers from; -1: always


@dataclass(frozen=True)
class TrainConfig(JobConfig):
    """A training run's whole config (stage 1 and stage 2 share the shape)."""
    # how far it trains, how often it saves and logs, where, and the encoder cache (speed, not weights):
    # a rerun may change these and resume (the constant-with-warmup schedule does not depend on max_steps)
    RESUMABLE = ("train.max_steps", "train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "output",
                 "export_published", "export_comfyui", "cache")
    stage: Literal[1, 2]
    seed: int
    model: TrainModelOptions
    data: DataOptions
    cache: CacheOptions
    train: TrainOptions
    ray: TrainRayOptions
    output: str
    export_published: bool            # also write the published infu_flux_v1.0 layout (OUT/published/)
    export_comfyui: bool              # also write the ComfyUI InfiniteYou node's files (OUT/comfyui/)

    def models(self) -> list[tuple[str, str, str]]:
        device = "cuda" if self.ray.use_gpu else "cpu"
        return [(f"training ({self.ray.num_workers} worker(s), {self.model.dtype})", device, "ray-train")]

    def needs(self) -> list:
        m = self.model
        return [*Need.of(m.base, DIFFUSERS, "FLUX base"),
                *Need.of(m.init, infu_weights(m.init_variant), f"InfU weights to start from ({m.init_variant})")]

    def batch_shape(self, world: int | None = None) -> tuple[int, int]:
        """(micro-batches per optimizer step over all workers, per worker)."""
        world = world or self.ray.num_workers
        micro, total = self.train.micro_batch_size, self.train.global_batch_size
        if total % micro or (total // micro) % world:
            raise ValueError(f"train.global_batch_size {total} must be micro_batch_size {micro} x a multiple of the "
                             f"{world} worker(s)")
        return total // micro, total // micro // world

    def check(self) -> None:
        """The batch arithmetic and the memory options that exclude each other (before Ray starts)."""
        self.batch_shape()
        if self.train.optimizer == "adamw_8bit" and self.ray.fsdp and self.ray.num_workers > 1:
            raise ValueError("train.optimizer adamw_8bit does not shard: use it with ray.fsdp: false (FSDP already "
                             "divides the optimizer states by the number of GPUs)")

    def absolute(self) -> "TrainConfig":
        """Every path made absolute: Ray Train workers do not share the caller's working directory."""
        def absolute(p):  # a URI (data in object storage) stays as it is
            return str(Path(p).expanduser().resolve()) if p and not is_uri(p) else p

        def absolute_ref(ref):  # Hub and URL references stay as they are
            return ModelRef.parse(ref.key) if ref is not None else ref

        return replace(self, output=absolute(self.output),
                       model=replace(self.model, base=absolute_ref(self.model.base), init=absolute_ref(self.model.init)),
                       data=replace(self.data, parquet=absolute(self.data.parquet)),
                       cache=replace(self.cache, dir=absolute(self.cache.dir)))

    @property
    def cache_dir(self):
        """The encoder cache's folder (a ``Path``, or an ``ObjectPath`` in object storage)."""
        return as_path(self.cache.dir or join(self.output, "cache"))
