"""What every row job (curate, caption, synth) shares: its output folder's layout and the guard
against reusing it with another config, finding input Parquet, reading columns back, the
accounting check, and the run-wide near-duplicate decision that turns candidates into kept/."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml

from curation.dedup import find_duplicates
from curation.records import KEPT, REJECTED, SPSS_SCHEMA
from pipelines.config import fingerprint
from pipelines.sink import conform, content_name, drop_images, set_status, write_atomic


class ConfigMismatch(Exception):
    """The output directory holds a run with another config or other sources."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    label: str
    path: str

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        """``KIND=PATH`` or ``KIND:LABEL=PATH`` (a label lets one kind appear twice)."""
        if "=" not in text:
            raise ValueError(f"--source {text!r}: expected KIND=PATH")
        name, path = text.split("=", 1)
        kind, _, label = name.partition(":")
        return cls(kind.strip().lower(), (label or kind).strip(), path.strip())


class Layout:
    """Where a row job keeps what under its output folder ``out``: kept/ and rejected/ (the
    output), _work/ (resume state: manifest, todo, candidates and the dedup decisions)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.kept, self.rejected, self.work = self.out / "kept", self.out / "rejected", self.out / "_work"
        self.manifest, self.todo, self.candidates = (self.work / d for d in ("manifest", "todo", "candidates"))
        self.dedup = self.work / "dedup.parquet"


def clear(folder: Path, keep: Path) -> None:
    """Delete what ``folder`` holds except ``keep`` (the running job's own log file lives there)."""
    for child in folder.iterdir():
        if child == keep:
            continue
        if keep.is_relative_to(child) and child.is_dir() and not child.is_symlink():
            clear(child, keep)
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def prepare_out(lay: Layout, cfg: dict, specs: list[SourceSpec], overwrite: bool) -> str:
    fp = fingerprint(cfg, [s.__dict__ for s in specs])
    run_file = lay.out / "run.json"
    if run_file.exists():
        old = json.loads(run_file.read_text()).get("fingerprint")
        if old != fp and not overwrite:
            raise ConfigMismatch(
                f"{lay.out} holds a run with a different config or sources (fingerprint {old}, now {fp}). "
                "Use another --out, the same config to resume, or --overwrite to start over.")
    if overwrite and lay.out.exists():
        clear(lay.out, keep=lay.work / "logs")
    lay.out.mkdir(parents=True, exist_ok=True)
    for tmp in lay.out.rglob("*.tmp"):
        tmp.unlink()
    run_file.write_text(json.dumps({"fingerprint": fp, "sources": [s.__dict__ for s in specs]}, indent=1))
    (lay.out / "config.yaml").write_text(yaml.safe_dump(
        {"sources_given": [s.__dict__ for s in specs], **cfg}, sort_keys=False))
    return fp


def check_stages(stages: list[tuple[type, dict]]) -> list:
    """Each stage built once in the driver, so its options are checked (ConfigError naming the key)
    before any output is touched or Ray starts."""
    return [cls(c) for cls, c in stages]


def parquet_files(*dirs: Path) -> list[str]:
    """The Parquet files directly in ``dirs``, sorted."""
    return sorted(str(p) for d in dirs if d.exists() for p in d.glob("*.parquet"))


def read_column(files: list[str], columns: list[str], schema: pa.Schema = SPSS_SCHEMA) -> pa.Table:
    """``columns`` of ``files``, typed (and nullable) as ``schema`` names them whether or not any file
    holds a row: reads of kept/, rejected/ and an empty folder always concatenate."""
    want = pa.schema([schema.field(c).with_nullable(True) for c in columns])
    if not files:
        return want.empty_table()
    return pads.dataset(files, format="parquet").to_table(columns=columns).cast(want)


def input_files(in_dir: str | Path) -> list[str]:
    d = Path(in_dir)
    files = parquet_files(d / "kept") or parquet_files(d)
    if not files:
        raise FileNotFoundError(f"no Parquet under {d} (expected {d}/kept/*.parquet or {d}/*.parquet)")
    return files


def dedup_and_finalize(lay: Layout, dedup: dict, rejected_images: bool = True, schema: pa.Schema = SPSS_SCHEMA,
                       key: str = "id", rank: str = "blur", image: str = "image") -> None:
    """Decide near duplicates over every candidate, then split candidates into kept/ and rejected/.

    Among near duplicates the largest image wins, then the higher ``rank`` column, then the smaller ``key``.
    """
    files = parquet_files(lay.candidates)
    if not lay.dedup.exists():
        cols = read_column(files, [key, "phash", "width", "height", rank], schema).rename_columns(
            ["id", "phash", "width", "height", "blur"])
        if not dedup.get("enabled", True):
            cols = cols.slice(0, 0)
        dups = find_duplicates(cols, int(dedup.get("max_distance", 4)), int(dedup.get("blocks", 8)))
        write_atomic(dups, lay.dedup)
    dups = pq.read_table(lay.dedup)
    dup_of = dict(zip(dups["id"].to_pylist(), dups["duplicate_of"].to_pylist()))
    for f in files:
        kept_path = lay.kept / Path(f).name
        if not kept_path.exists():
            t = pq.read_table(f)
            is_dup = pc.is_in(t[key], value_set=dups["id"])
            rej = t.filter(is_dup)
            if rej.num_rows:
                rej = set_status(rej, REJECTED, "duplicate")
                rej = rej.set_column(rej.schema.get_field_index("duplicate_of"), "duplicate_of",
                                     pa.array([dup_of[i] for i in rej[key].to_pylist()], pa.string()))
                if not rejected_images:
                    rej = drop_images(rej, image)
                write_atomic(conform(rej, schema), lay.rejected / content_name(rej, "dup", key))
            keep = set_status(t.filter(pc.invert(is_dup)), KEPT)
            write_atomic(conform(keep, schema), kept_path)
        Path(f).unlink()


def count_unaccounted(expected_ids, written_ids) -> int:
    """How many expected ids appear in no output file."""
    return int(pc.sum(pc.invert(pc.is_in(expected_ids, value_set=written_ids))).as_py() or 0)
