"""The training loop every worker runs: one optimizer step at a time over the global batch.

Global batch = ``train.global_batch_size`` rows = K micro-batches of ``micro_batch_size``;
each of the N workers trains K / N of them per step, with gradient accumulation, and the
gradients are averaged over workers (DDP or FSDP, see ``parallel``), so the step is the
mean loss over the global batch whatever N is. A micro-batch's global position and each
row's id key every random draw of that row (``infu_model.train_data.sample_rngs``); an
unusable row is replaced by a zero-weight stand-in so that all workers run the same passes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

from infu_model.infusenet import build_infusenet
from infu_model.comfyui import export_comfyui
from infu_model.pipeline import export_published, load_infu_weights
from infu_model.published import STAGE_VARIANT
from infu_model.projection import ProjectionNetwork
from infu_model.storage import as_path
from infu_model.train_data import Skip, bucket_size, prepare, sample_rngs, stand_in
from infu_model.training import (InfUTrainable, enable_gradient_checkpointing, flow_matching_loss, make_optimizer,
                                 sample_t)
from pipelines.job import input_files
from pipelines.train.cache import encode, load_base, open_cache
from pipelines.train.checkpoint import (FolderCheckpoints, RayTrainCheckpoints, load_optimizer_state, load_trainer_state,
                                        save_checkpoint)
from pipelines.train.config import CHECKPOINTING, TrainConfig
from pipelines.train.loaders import NotEnoughData, bucket_counts, epoch_batches, make_loader
from pipelines.train.parallel import Workers, clip_grad_norm, is_sharded, load_optimizer, wrap

log = logging.getLogger(__name__)


def initial_trainables(cfg: TrainConfig, transformer, ckpt: Path | None):
    """(InfuseNet, projection) in float32: the checkpoint's, ``model.init``'s, or fresh ones (the
    paper's: InfuseNet initialised from the base's first blocks, i = 4)."""
    m = cfg.model
    if ckpt is not None:
        net, proj, _ = load_infu_weights(ckpt)
    elif m.init:
        net, proj, _ = load_infu_weights(m.init, m.init_variant)
    else:
        torch.manual_seed(cfg.seed)
        net = build_infusenet(transformer, m.multiplication_factor)
        proj = ProjectionNetwork(**{"embedding_dim": m.embedding_dim, "output_dim": transformer.config.joint_attention_dim,
                                    **m.projection})
    return net.float(), proj.float()


class Trainer:
    """One worker's share of a training run (see the module doc); ``run()`` trains to ``max_steps``.
    ``checkpoints``: where they are reported and found (``pipelines.train.checkpoint``)."""

    def __init__(self, cfg: TrainConfig, checkpoints: FolderCheckpoints | RayTrainCheckpoints | None = None):
        self.cfg, t, m = cfg, cfg.train, cfg.model
        self.w = w = Workers.current(cfg.ray.use_gpu)
        self.out, self.seed = as_path(cfg.output), cfg.seed
        self.checkpoints = checkpoints or FolderCheckpoints(self.out, t.keep_checkpoints)
        self.per_step, self.share = cfg.batch_shape(w.world)
        replace(cfg, ray=replace(cfg.ray, num_workers=w.world)).check()
        fsdp = cfg.ray.fsdp and w.world > 1
        files = input_files(cfg.data.parquet)
        # steps that hold a whole epoch: that many steps without one usable row means none is usable
        self.epoch_steps = -(-epoch_batches(bucket_counts(files), t.micro_batch_size, cfg.data.parquet) // self.per_step)
        self.cache = open_cache(cfg)
        # with a cache the text encoders stay on the CPU: the cache holds their outputs
        self.base = load_base(m, w.device, "cpu" if self.cache.root else None)
        self.ckpt = ckpt = self.checkpoints.latest()
        net, proj = initial_trainables(cfg, self.base.transformer, ckpt)
        self.configs = {"infusenet": dict(net.config), "image_proj": dict(proj.config)}
        self.emb_dim = proj.config.embedding_dim
        for part in CHECKPOINTING[m.gradient_checkpointing]:
            enable_gradient_checkpointing(net if part == "infusenet" else self.base.transformer)
        self.model = wrap(InfUTrainable(net, proj).train(), w, fsdp, self.base.transformer.dtype)
        self.opt = make_optimizer([p for p in self.model.parameters() if p.requires_grad], t.optimizer, t.lr,
                                  t.weight_decay)
        from diffusers.optimization import get_scheduler

        self.sched = get_scheduler("constant_with_warmup", self.opt, num_warmup_steps=t.warmup_steps)
        self.step, self.skipped, self.losses, self.idle = 0, Counter(), [], 0
        self.mult = self.base.vae_scale_factor * 2
        self.loader = self.data_loader(fresh_stream=self.resume(ckpt) if ckpt is not None else False)

    def resume(self, ckpt: Path) -> bool:
        """Optimizer, scheduler, step and counts from ``ckpt`` (the weights were loaded before
        wrapping); True when the ray loader cannot continue its stream (another number of workers)."""
        state = load_trainer_state(ckpt, self.w)
        whole = self.w.rank == 0 or not is_sharded(self.model)
        load_optimizer(self.model, self.opt, load_optimizer_state(ckpt) if whole else None, self.w)
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.skipped = state["step"], Counter(state["skipped"])
        if state["world"] != self.w.world and self.cfg.data.loader == "ray":
            log.warning("resuming a %d-worker run on %d workers: the ray loader cannot continue the same stream "
                        "and starts a fresh shuffle (data.loader: plan resumes exactly)", state["world"], self.w.world)
            return True
        return False

    def data_loader(self, fresh_stream: bool):
        """This worker's micro-batches from where the run stands (``step`` x its share per step)."""
        data = self.cfg.data
        seed, skip = (self.seed + self.step, 0) if fresh_stream else (self.seed, self.step * self.share)
        return make_loader(data.loader, input_files(data.parquet), data.columns(), self.cfg.train.micro_batch_size,
                           seed, self.w.rank, self.w.world, skip=skip, per_step=self.per_step,
                           shuffle_buffer=data.shuffle_buffer)

    # ---------------------------------------------------------------- a step --
    def samples(self, rows: list[dict], position: int):
        data, out, gens = self.cfg.data, [], []
        size = bucket_size(rows[0]["bucket"], data.max_side, self.mult)
        for i, row in enumerate(rows):
            rng, gen = sample_rngs(self.seed, position, str(row.get(data.id_column) or i))
            try:
                out.append(prepare(row, data, self.emb_dim, size, rng))
            except Skip as e:
                self.skipped[str(e)] += 1
                out.append(stand_in(size, self.emb_dim))
            gens.append(gen)
        return out, gens

    def train_step(self) -> dict:
        t, dev = self.cfg.train, self.w.device
        start, total, used = time.perf_counter(), torch.zeros((), device=dev), 0
        for j in range(self.share):
            samples, gens = self.samples(next(self.loader), self.step * self.per_step + self.w.rank * self.share + j)
            batch = encode(self.base, samples, gens, self.cfg.data.max_sequence_length, dev, self.cache)
            tt = torch.cat([sample_t(1, g, t.logit_mean, t.logit_std) for g in gens]).to(dev)
            noise = torch.stack([torch.randn(batch.latents.shape[1:], generator=g) for g in gens]).to(dev)
            last = j == self.share - 1
            # DDP averages gradients in the last micro-batch's backward only
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with sync:
                loss = flow_matching_loss(self.base.transformer, self.model, batch, t=tt, noise=noise,
                                          guidance_scale=t.guidance_scale) / self.share
                loss.backward()
            total += loss.detach()
            used += sum(s["weight"] > 0 for s in samples)
        norm = clip_grad_norm(self.model, t.grad_clip)
        loss_sum, n = self.w.sum([float(total), float(used)])
        if n:  # without one usable row there is no gradient, but AdamW would still decay and follow its momentum
            self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.losses.append(loss_sum / self.w.world)
        self.idle = 0 if n else self.idle + 1
        if self.idle >= self.epoch_steps:  # every worker sees the same n: all stop together
            raise NotEnoughData(f"not one usable training row in {self.idle} steps, a whole epoch of "
                                f"{self.cfg.data.parquet}: skipped {self.w.sum_counts(self.skipped)}")
        return {"step": self.step, "loss": loss_sum / self.w.world, "grad_norm": norm, "lr": self.sched.get_last_lr()[0],
                "samples": int(n), "seconds": time.perf_counter() - start}

    # ----------------------------------------------------------------- a run --
    def run(self) -> dict:
        try:
            return self.train_to_end()
        finally:
            self.checkpoints.close()

    def train_to_end(self) -> dict:
        t = self.cfg.train
        max_steps, every, log_every = t.max_steps, t.checkpoint_every, t.log_every
        work = self.checkpoints.work  # the output folder, or this worker's own before its files are uploaded
        log_path, earlier = work / "train_log.jsonl", self.out / "train_log.jsonl"
        if self.w.rank == 0:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            if earlier.is_file():  # a resumed run: records past its checkpoint are trained again
                kept = [ln for ln in earlier.read_text().splitlines() if json.loads(ln)["step"] <= self.step]
                tmp = log_path.with_name(log_path.name + ".tmp")
                tmp.write_text("".join(ln + "\n" for ln in kept))
                tmp.replace(log_path)
        window = []
        while self.step < max_steps:
            window.append(self.train_step())
            rec = saved = None
            # the first step too: a long run shows it is going before its first log_every steps are done
            if self.step % log_every == 0 or self.step in (1, max_steps):
                rec = self.log(window, log_path)
                self.checkpoints.publish(log_path.name)
                window = []
            if self.step % every == 0 or self.step == max_steps:
                self.ckpt = saved = save_checkpoint(work, self.step, self.model, self.opt, self.sched,
                                                    self.configs, self.meta(), self.w, dict(self.skipped),
                                                    self.checkpoints.lease, self.checkpoints.own_folder)
            if rec is not None or saved is not None:  # the same steps on every worker
                self.checkpoints.report(self.w, rec, saved)
        skipped = self.w.sum_counts(self.skipped)
        if self.w.rank == 0:
            finish(work, self.ckpt, self.cfg)
            self.checkpoints.publish(*FINISHED)
        return {"step": self.step, "losses": self.losses, "skipped": skipped}

    def meta(self) -> dict:
        return {"trained_by": "infu train", "stage": self.cfg.stage, "face_backend": self.cfg.model.face_backend}

    def log(self, window: list[dict], path: Path) -> dict:
        """One record per ``log_every`` steps: mean loss over workers and steps, samples/s over all
        workers; worker 0 appends it to ``train_log.jsonl`` and returns it (the others: ``{}``)."""
        mem = torch.cuda.max_memory_allocated(self.w.device) / 2**30 if self.w.device.type == "cuda" else 0.0
        peaks = self.w.gather(mem)
        skipped = self.w.sum_counts(self.skipped)
        if self.w.rank != 0:
            return {}
        seconds = sum(r["seconds"] for r in window)
        rec = {"step": self.step, "loss": sum(r["loss"] for r in window) / len(window), "lr": window[-1]["lr"],
               "grad_norm": window[-1]["grad_norm"], "samples_per_s": sum(r["samples"] for r in window) / seconds,
               "gpu_mem_gib": max(peaks), "workers": self.w.world, "skipped": skipped}
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        return rec


FINISHED = ("final", "published", "comfyui", "train_log.csv", "loss_curve.png")  # what ``finish`` writes


def train_loop(cfg: TrainConfig) -> dict:
    """One worker's training without Ray Train: a plain call is one worker; under another
    ``torch.distributed`` launcher (torchrun, ``mp.spawn``) every process calls it."""
    return Trainer(cfg).run()


def finish(out: Path, last: Path, cfg: TrainConfig) -> None:
    """``OUT/final`` (the checkpoint ``last``'s weights, hard-linked), the published layout and the
    ComfyUI node's files if asked (a stage-1 model is a ``sim_stage1`` variant, stage 2 ``aes_stage2``),
    the CSV log and the loss curve."""
    final = out / "final"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(last, final, copy_function=_link,
                    ignore=shutil.ignore_patterns("*.pt", "rank-*.json", "trainer_state.json"))
    variant = STAGE_VARIANT[cfg.stage]
    if cfg.export_published or cfg.export_comfyui:
        net, proj, _ = load_infu_weights(final)
    if cfg.export_published:
        export_published(net, proj, out / "published", variant)
    if cfg.export_comfyui:
        export_comfyui(net, proj, out / "comfyui", variant)
    recs = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    with open(out / "train_log.csv", "w") as f:
        f.write("step,loss,lr,grad_norm,samples_per_s,gpu_mem_gib\n")
        for r in recs:
            f.write(f"{r['step']},{r['loss']},{r['lr']},{r['grad_norm']},{r['samples_per_s']},{r['gpu_mem_gib']}\n")
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


def _link(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst)
