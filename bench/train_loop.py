"""The real `infu train` loop (``pipelines.train.Trainer``, one worker, no Ray) on a tiny
random FLUX + InfU and the sample photos, on the GPU when there is one: the shipped
mixed-precision setup (bf16 frozen base, fp32 trainables under autocast) with each memory
option, a checkpoint, a resume from it, and the saved weights loaded back in inference.
Prints the losses and s/step per option; exits non-zero when something is wrong.

    python bench/train_loop.py [--steps 4] [--side 128]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from curation import samples  # noqa: E402
from curation.records import stable_id  # noqa: E402
from curation.registry import empty_row
from curation.registry import spss_schema  # noqa: E402
from infu_model.pipeline import load_infu_weights  # noqa: E402
from infu_model.tiny import make_tiny  # noqa: E402
from pipelines.jobs import load_config  # noqa: E402
from pipelines.train import train_loop  # noqa: E402

OPTIONS = ["adamw:none", "adamw:infusenet", "adamw:all", "adamw_8bit:infusenet"]


def spss(root: Path, rows: int = 8) -> Path:
    rng, photos = np.random.default_rng(0), [samples.astronaut(), samples.grace_hopper()]
    out = []
    for i in range(rows):
        r = {k: v for k, v in empty_row().items() if not k.startswith("_")}
        im = photos[i % 2]
        r.update(id=stable_id("bench", str(i)), source="bench", path=f"{i}.jpg", frame=-1, status="kept",
                 image=samples.jpeg_bytes(im), width=im.width, height=im.height, bucket="1024x1024",
                 id_embedding=rng.normal(0, 0.1, 128).astype("float32").tolist(),
                 kps=[[200.0, 200.0], [260.0, 200.0], [230.0, 240.0], [205.0, 280.0], [255.0, 280.0]],
                 captions=[{"source": "dataset", "text": f"a portrait photo number {i}"}])
        out.append(r)
    (root / "kept").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(out, schema=spss_schema()), root / "kept" / "part-0.parquet")
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--side", type=int, default=128, help="training resolution (buckets scaled to this side)")
    ap.add_argument("--options", nargs="+", default=OPTIONS, help="OPTIMIZER:CHECKPOINTING, checkpointing none|infusenet|all")
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    work = Path(tempfile.mkdtemp(prefix="infu_train_loop_"))
    tiny, data = make_tiny(work / "tiny"), spss(work / "spss")
    print(f"device: {torch.cuda.get_device_name() if gpu else 'cpu'}; tiny FLUX, bf16 base, {args.side}px, "
          f"{args.steps} steps + resume")
    ok = True
    for k, option in enumerate(args.options):
        opt = dict(zip(("optimizer", "gradient_checkpointing"), option.split(":")))
        cfg = load_config("stage1", overrides={
            "model": {"base": str(tiny["base"]), "embedding_dim": 128, "dtype": "bfloat16",
                      "gradient_checkpointing": opt["gradient_checkpointing"]},
            "data": {"parquet": str(data), "loader": "plan", "max_side": args.side, "max_sequence_length": 32},
            "train": {"lr": 1e-4, "global_batch_size": 2, "micro_batch_size": 1, "max_steps": args.steps,
                      "warmup_steps": 1, "checkpoint_every": args.steps // 2, "optimizer": opt["optimizer"]},
            "ray": {"use_gpu": gpu}, "output": str(work / f"run{k}")})
        label = f"{opt['optimizer']}, checkpointing {opt['gradient_checkpointing']}"
        try:
            start = time.perf_counter()
            first = train_loop(cfg.updated({"train": {"max_steps": args.steps // 2}}))
            rest = train_loop(cfg)  # resumes from the checkpoint just written
            seconds = (time.perf_counter() - start) / args.steps
            net, proj, _ = load_infu_weights(work / f"run{k}" / "final")
            losses = first["losses"] + rest["losses"]
            fine = all(math.isfinite(x) for x in losses) and net.dtype == torch.float32 and proj.config.embedding_dim == 128
        except Exception as e:  # noqa: BLE001 - report every option, then fail
            traceback.print_exc()
            print(f"{label:<40} FAILED: {type(e).__name__}: {e}")
            ok = False
            continue
        ok &= fine
        print(f"{label:<40} {'ok' if fine else 'NOT FINITE'}  losses {[round(x, 4) for x in losses]}  "
              f"{seconds:.3f} s/step (incl. start-up)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
