"""`infu caption`: SPSS Parquet in, SPSS Parquet with more captions out.

Same contract as curation: every input row ends in OUT/kept/ (status kept) or,
if a stage fails on it, OUT/rejected/ (quarantined with the error);
OUT/stats.json adds them up and counts captions per source and dropped outputs
per reason; a rerun on the same OUT resumes (rows already written are skipped).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curation.caption_stage import CaptionStage, clean_dataset_captions
from curation.records import ALIVE, SPSS_SCHEMA, to_table
from pipelines.job import (Layout, SourceSpec, check_inputs, check_stages, count_unaccounted, input_files,
                           parquet_files, prepare_out, read_column)
from pipelines.ray_stages import table_to_rows


def real_names(cfg: dict) -> list[str]:
    """The names in ``names_file`` (one per line), always replaced by "a person"."""
    if not cfg.get("names_file"):
        return []
    path = Path(cfg["names_file"]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"names_file not found: {path}")
    return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]


def captioner_cfgs(cfg: dict, names: list[str]) -> list[dict]:
    return [{**c, "max_chars": cfg["max_chars"], "names": names} for c in cfg.get("captioners") or []]


def _prepare(table: pa.Table, done: pa.Array, max_chars: int, names: list[str]) -> pa.Table:
    """Drop rows already written (resume), reopen the rest, clean the dataset's own captions."""
    if len(done):
        table = table.filter(pc.invert(pc.is_in(table["id"], value_set=done)))
    rows = table_to_rows(table)
    known = frozenset(names)
    for r in rows:
        r["status"] = ALIVE
        clean_dataset_captions(r, max_chars, known)
    return to_table(rows)


def check_caption(in_dir, cfg: dict) -> list[CaptionStage]:
    """Everything a caption run can be refused for, before it touches its output: input Parquet
    with rows and the columns captioning reads, the names file, each captioner's options and model
    folder (a wrong folder fails here, before Ray starts or a row is read)."""
    if not check_inputs(input_files(in_dir), ["id", "image"], "infu caption"):
        raise ValueError(f"nothing to caption: the Parquet in {in_dir} holds no rows")
    captioners = check_stages([(CaptionStage, c) for c in captioner_cfgs(cfg, real_names(cfg))])
    for s in captioners:
        if s.enabled:
            s.check()
    return captioners


def run_caption(in_dir, out, cfg: dict, *, ray_address: str | None = None, overwrite: bool = False, log=print) -> dict:
    import ray

    from pipelines.ray_runtime import init_ray
    from pipelines.ray_stages import add_stage, plan_pools
    from pipelines.sink import RowSink

    t0 = time.time()
    captioners = check_caption(in_dir, cfg)
    files, names = input_files(in_dir), real_names(cfg)
    stages = captioner_cfgs(cfg, names)
    reports = {s.source: s.report() for s in captioners}
    lay = Layout(Path(out))
    prepare_out(lay, cfg, [SourceSpec("spss", "input", str(Path(in_dir).resolve()))], overwrite, "caption")
    done = read_column(parquet_files(lay.kept, lay.rejected), ["id"])["id"].combine_chunks()
    total = read_column(files, ["id"]).num_rows
    if total - len(done) > 0:
        init_ray(ray_address, cfg)
        pools = plan_pools([(CaptionStage, c) for c in stages], log=log)
        log(f"caption: {total - len(done)} rows to caption ({total} in {in_dir})")
        ds = ray.data.read_parquet(files, schema=SPSS_SCHEMA)
        # a light CPU request for the cleaning glue leaves the captioners' slots free
        ds = ds.map_batches(_prepare, batch_format="pyarrow", batch_size=64, num_cpus=0.25,
                            fn_kwargs={"done": done, "max_chars": cfg["max_chars"], "names": names})
        for cls, c in pools:
            ds = add_stage(ds, cls, c)
        ds.write_datasink(RowSink(lay.kept, lay.rejected, int(cfg["output"]["rows_per_file"]),
                                       True, alive_status="kept"))
    stats = caption_stats(lay, files, reports, time.time() - t0)
    (lay.out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def caption_stats(lay: Layout, inputs: list[str], reports: dict, elapsed: float) -> dict:
    cols = ["id", "status", "reason", "captions", "caption_drops"]
    out = read_column(parquet_files(lay.kept, lay.rejected), cols)
    in_ids = read_column(inputs, ["id"])["id"]
    missing = count_unaccounted(in_ids, out["id"])
    per_source, drops, without = {}, {}, 0
    for caps, dr in zip(out["captions"].to_pylist(), out["caption_drops"].to_pylist()):
        without += not caps
        for c in caps or []:
            per_source[c["source"]] = per_source.get(c["source"], 0) + 1
        for d in dr or []:
            drops.setdefault(d["source"], {}).setdefault(d["reason"], 0)
            drops[d["source"]][d["reason"]] += 1
    status = out["status"].to_pylist()
    return {"inputs": len(in_ids), "kept": status.count("kept"), "quarantined": status.count("quarantined"),
            "unaccounted": missing, "adds_up": missing == 0 and out.num_rows == len(in_ids),
            "captions_per_source": per_source, "caption_drops": drops, "rows_without_captions": without,
            "stages": reports, "elapsed_s": round(elapsed, 2)}
