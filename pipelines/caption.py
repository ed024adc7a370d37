"""`infu caption`: SPSS Parquet in, SPSS Parquet with more captions out.

Same contract as curation: every input row ends in OUT/kept/ (status kept) or,
if a stage fails on it, OUT/rejected/ (quarantined with the error);
OUT/stats.json adds them up and counts captions per source and dropped outputs
per reason; a rerun on the same OUT resumes (rows already written are skipped).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from infu_model.storage import arrow, as_path, is_uri

import pyarrow as pa
import pyarrow.compute as pc

from curation.caption_stage import CaptionStage, clean_dataset_captions
from curation.engine import ALIVE, between
from curation.records import to_table
from pipelines.config import JobConfig, merge, named_block, packaged, stage_models
from pipelines.job import (Layout, OutputOptions, RayOptions, SourceSpec, check_inputs, count_unaccounted,
                           input_files, job_run, parquet_files, prepare_out, publish, read_column, record_schema, rows_added,
                           write_json)
from pipelines.logs import progress_lines
from pipelines.ray_stages import table_to_rows

SHARED = ("device", "dtype", "max_new_tokens", "generate_batch", "instruction", "resources")  # what chat backends share


@dataclass(frozen=True)
class CaptionConfig(JobConfig):
    """``configs/caption.yaml``, typed."""
    ray: RayOptions
    progress: bool
    max_chars: int = between(1)       # captions are cut at the last sentence end under this length
    names_file: str | None            # one real person's name per line: always replaced by "a person"
    captioners: tuple[CaptionStage, ...]
    output: OutputOptions

    @classmethod
    def complete(cls, data: dict) -> dict:
        """Each captioner laid over the default captioner of its backend; a backend without one (chat_vlm,
        internvl2) takes what the chat backends share from the internvl block."""
        defaults = packaged("caption")["captioners"]

        def default(block: dict) -> dict:
            backend = block.get("backend") or block.get("name")
            found = named_block(defaults, "backend", backend)
            shared = {k: v for k, v in named_block(defaults, "backend", "internvl").items() if k in SHARED}
            return {"name": backend, "backend": backend, **(found or shared)}

        blocks = data.get("captioners") or []
        return {**data, "captioners": [merge(default(b), b) if isinstance(b, dict) else b for b in blocks]}

    def models(self) -> list[tuple[str, str, str]]:
        return stage_models(self.captioners)

    def needs(self) -> list:
        return [n for c in self.captioners for n in c.needs()]

    def stages(self) -> list[CaptionStage]:
        """The captioners with what the job gives each: the caption length and the names to replace."""
        names = tuple(real_names(self.names_file))
        return [c.with_(opts=replace(c.opts, max_chars=self.max_chars, names=names)) for c in self.captioners]


def real_names(names_file: str | None) -> list[str]:
    """The names in ``names_file`` (one per line), always replaced by "a person"."""
    if not names_file:
        return []
    path = Path(names_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"names_file not found: {path}")
    return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]


def _prepare(table: pa.Table, done: pa.Array, max_chars: int, names: list[str], schema: pa.Schema) -> pa.Table:
    """Drop rows already written (resume), reopen the rest, clean the dataset's own captions."""
    if len(done):
        table = table.filter(pc.invert(pc.is_in(table["id"], value_set=done)))
    rows = table_to_rows(table, schema)
    known = frozenset(names)
    for r in rows:
        r["status"] = ALIVE
        clean_dataset_captions(r, max_chars, known)
    return to_table(rows, schema)


def check_caption(in_dir, cfg: CaptionConfig) -> list[CaptionStage]:
    """Everything a caption run can be refused for, before it touches its output: input Parquet
    with rows and the columns captioning reads, the names file, each captioner's model folder (a
    wrong folder fails here, before Ray starts or a row is read). Returns the captioners."""
    if not check_inputs(input_files(in_dir), ["id", "image"], "infu caption"):
        raise ValueError(f"nothing to caption: the Parquet in {in_dir} holds no rows")
    captioners = cfg.stages()
    for s in captioners:
        if s.enabled:
            s.check()
    return captioners


@job_run("caption", check_caption)
def run_caption(in_dir, out, cfg: CaptionConfig, *, checked, claim, ray_address: str | None = None,
                overwrite: bool = False, log=print) -> dict:
    import ray

    from pipelines.ray_runtime import init_ray
    from pipelines.ray_stages import add_stage, plan_pools
    from pipelines.sink import RowSink

    t0 = time.time()
    captioners = checked.found
    files = input_files(in_dir)
    reports = {s.label: s.report() for s in captioners}
    lay = Layout(out)
    prepare_out(lay, claim, cfg, [SourceSpec("spss", "input", str(as_path(in_dir).resolve()))], overwrite)
    done = read_column(lay.written(), ["id"])["id"].combine_chunks()
    total = read_column(files, ["id"]).num_rows
    if total - len(done) > 0:
        init_ray(ray_address, cfg.ray, cfg.progress)
        pools = plan_pools(captioners, log=log)
        log(f"caption: {total - len(done)} rows to caption ({total} in {in_dir})")
        schema = record_schema(files)
        fs, paths = arrow(files)
        ds = ray.data.read_parquet(paths, filesystem=fs, schema=schema)
        # a light CPU request for the cleaning glue leaves the captioners' slots free
        ds = ds.map_batches(_prepare, batch_format="pyarrow", batch_size=64, num_cpus=0.25,
                            fn_kwargs={"done": done, "max_chars": cfg.max_chars, "names": real_names(cfg.names_file),
                                       "schema": schema})
        for stage in pools:
            ds = add_stage(ds, stage, schema)
        with progress_lines("caption", total - len(done), rows_added(lay.parts_kept, lay.parts_rejected), log):
            ds.write_datasink(RowSink(lay.parts_kept, lay.parts_rejected, cfg.output.rows_per_file,
                                      cfg.output.rejected_images, schema, alive_status="kept", lease=lay.lease))
    if is_uri(lay.out):
        publish(lay)
    stats = caption_stats(lay, files, reports, time.time() - t0)
    write_json(lay.out / "stats.json", stats)  # last, written whole: the file that says the run is done
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
