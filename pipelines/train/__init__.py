"""`infu train`: stage-1 pretraining / stage-2 SFT of InfuseNet + projection on Ray Train.

- ``loaders``: Parquet rows as micro-batches of one aspect-ratio bucket (``plan``: the same
  global batches on any number of workers; ``ray``: streamed by Ray Data);
- ``cache``: the frozen encoders and their sharded on-disk cache (``--build-cache``);
- ``parallel``: worker rank and device, DDP / FSDP, full state dicts;
- ``checkpoint``: atomic checkpoints that resume on any number of workers, recorded and kept by
  Ray Train (by the folder itself without it);
- ``loop``: the per-worker training loop, logs and final weights;
- ``launch``: Ray Train's ``TorchTrainer`` around the loop; progress from the metrics it reports.
"""
from pipelines.train.cache import build_cache
from pipelines.train.launch import check_training, run_train
from pipelines.train.loaders import batch_plan, stream_batches
from pipelines.train.config import TrainConfig
from pipelines.train.loop import Trainer, train_loop

__all__ = ["TrainConfig", "Trainer", "batch_plan", "build_cache", "check_training", "run_train", "stream_batches",
           "train_loop"]
