"""`infu train`: stage-1 pretraining / stage-2 SFT of InfuseNet + projection on Ray Train.

- ``loaders``: Parquet rows as micro-batches of one aspect-ratio bucket (``plan``: the same
  global batches on any number of workers; ``ray``: streamed by Ray Data);
- ``cache``: the frozen encoders and their sharded on-disk cache (``--build-cache``);
- ``parallel``: worker rank and device, DDP / FSDP, full state dicts;
- ``checkpoint``: atomic checkpoints that resume on any number of workers, recorded and kept by
  Ray Train (by the folder itself without it);
- ``loop``: the per-worker training loop, logs and final weights;
- ``launch``: Ray Train's ``TorchTrainer`` around the loop; progress from the metrics it reports;
- ``watch``: the callbacks Ray Train's controller runs for the driver.

The names below load their module when first used, so that importing one light module of this
package (``watch``, ``config``: what Ray Train's controller unpickles) does not import torch.
"""
import importlib

_HOME = {"TrainConfig": "config", "Trainer": "loop", "batch_plan": "loaders", "build_cache": "cache",
         "check_training": "launch", "run_train": "launch", "stream_batches": "loaders", "train_loop": "loop"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
