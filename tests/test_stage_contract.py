"""The stage contract: stages declare the columns they read and write, the record follows from the
declarations, and a new filter stage is one file, one registry line and one YAML block."""
import ast
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from curation import registry
from curation.engine import ALIVE, Chain, ChainError, Stage, UndeclaredColumn, chain_schema, reject, run_stage
from curation.records import LISTED_FIELDS
from curation.registry import empty_row
from pipelines.curate import run_curate
from pipelines.job import SourceSpec
from pipelines.report import write_report

ROOT = Path(__file__).resolve().parent.parent
COLOUR_BLOCK = {"name": "colour", "min_colourfulness": 10.0, "resources": {"num_cpus": 1, "batch_size": 8}}


@pytest.fixture()
def colour_registered(monkeypatch):
    """The one registry line a user adds for tests/colour_stage.py."""
    monkeypatch.setitem(registry.STAGES, "colour", "colour_stage:ColourStage")


def outcomes(out: Path) -> dict:
    files = sorted(str(p) for sub in ("kept", "rejected") for p in (out / sub).glob("*.parquet"))
    return {Path(r["path"]).stem: r for r in pads.dataset(files).to_table().to_pylist()}


def test_a_new_filter_stage_is_one_file_one_registry_line_and_one_yaml_block(
        colour_registered, sample_dir, ray_local, tmp_path, curate_cfg):
    """Its score reaches the Parquet of kept and rejected rows, stats.json and the report, its reason the
    counts and the funnel, with no second list edited anywhere."""
    from test_curate import EXPECTED

    cfg = curate_cfg.updated({"stages": [COLOUR_BLOCK]})
    out = tmp_path / "out"
    stats = run_curate([SourceSpec("folder", "sample", str(sample_dir))], out, cfg, log=lambda m: None)
    got = outcomes(out)
    assert {k: (r["status"], r["reason"]) for k, r in got.items()} == {
        **EXPECTED, "grace_16bit_gray": ("rejected", "greyscale")}  # no colour: it never reaches dedup
    assert got["grace_16bit_gray"]["colourfulness"] == 0.0
    decoded = [r for r in got.values() if r["width"] and r["reason"] not in ("low_resolution", "bad_aspect", "blurry",
                                                                            "too_large")]
    assert decoded and all(r["colourfulness"] > 10 for r in decoded if r["reason"] != "greyscale")
    assert stats["adds_up"] and stats["by_reason"]["greyscale"] == 1 and stats["stages"]["colour"]["ran"]
    spread = stats["scores"]["colourfulness"]
    assert spread["rows"] == sum(r["colourfulness"] is not None for r in got.values()) and spread["min"] == 0.0
    assert "analysis" not in " ".join(pads.dataset(str(out / "kept")).schema.names)  # hand-over columns stay inside

    html = write_report(out).read_text()
    assert "greyscale: 1 rows" in html and "colourfulness 0.000" in html  # the rejected row's evidence
    assert '<td>colourfulness</td>' in html  # the score table


class NeedsNSFW(Stage):
    """Reads the NSFW score: it must come after the nsfw stage."""
    name = "after_nsfw"
    reads = ("nsfw",)


def test_a_stage_that_reads_what_no_stage_before_it_writes_is_refused_when_the_job_is_built(
        monkeypatch, sample_dir, tmp_path, curate_cfg):
    from curation.faces import FaceStage
    from curation.nsfw import NSFWStage
    from pipelines.curate import check_curate

    quality = registry.stage_class("quality")
    with pytest.raises(ChainError, match="'faces' reads width, height, _analysis, _analysis_h, _analysis_w, which nothing before it"):
        registry.row_schema([FaceStage])  # a model stage without the decode stage before it
    assert "nsfw" in registry.row_schema([quality, NSFWStage, NeedsNSFW]).names

    class Clash(Stage):
        name = "clash"
        writes = (pa.field("nsfw", pa.string()),)

    with pytest.raises(ChainError, match="'clash' writes nsfw as string, which is already float"):
        registry.row_schema([quality, NSFWStage, Clash])

    monkeypatch.setitem(registry.STAGES, "after_nsfw", "test_stage_contract:NeedsNSFW")
    block = {"name": "after_nsfw", "resources": {"num_cpus": 1, "batch_size": 8}}
    specs = [SourceSpec("folder", "sample", str(sample_dir))]
    with pytest.raises(ChainError, match="'after_nsfw' reads nsfw, which nothing before it writes"):
        check_curate(specs, curate_cfg.updated({"stages": [block, "nsfw"]}))  # before any output exists
    check_curate(specs, curate_cfg.updated({"stages": ["nsfw", block]}))


def test_a_stage_that_fills_a_column_it_did_not_declare_fails_instead_of_losing_it():
    class Sloppy(Stage):
        name = "sloppy"
        writes = (pa.field("score", pa.float32()),)

        def process(self, rows):
            for r in rows:
                r["score"], r["score_note"] = 1.0, "high"

    rows = [{"id": "a", "status": ALIVE, "reason": None, "error": None}]
    with pytest.raises(UndeclaredColumn, match=r"'sloppy' filled \['score_note'\]"):
        run_stage(Sloppy(), rows)


def test_a_chain_sheds_what_its_stages_hand_each_other():
    """The decoded image serves the stages of a chain and goes no further; a row a stage lets go sheds
    it at once (a later stage's model never sees it, the next operator never receives it)."""
    class Hands(Stage):
        name = "hands"
        writes = (pa.field("_pixels", pa.binary()),)

        def process(self, rows):
            for r in rows:
                r["_pixels"] = b"x" * 10

    class Drops(Stage):
        name = "drops"
        reasons = ("odd",)
        reads = ("_pixels",)

        def process(self, rows):
            for r in rows:
                if r["id"] == "odd":
                    reject(r, "odd")

    schema = chain_schema([Hands, Drops], [pa.field("id", pa.string())])
    assert schema.names == ["id", "_pixels"]
    rows = [{"id": i, "_uri": "s3://b/" + i, "status": ALIVE, "reason": None, "error": None} for i in ("odd", "even")]
    run_stage(Chain([Hands(), Drops()]), rows)
    assert [(r["_pixels"], r["status"]) for r in rows] == [(None, "rejected"), (None, ALIVE)]
    assert rows[0]["_uri"] is None and rows[1]["_uri"] == "s3://b/even"  # the dead row sheds every hand-over


def test_the_record_is_assembled_from_the_stages_declarations():
    """One list per stage: the listing's columns, each registered stage's in order, then status; the
    transient hand-over columns are in the rows but never in the record."""
    record = registry.spss_schema()
    assert record.names[:len(LISTED_FIELDS)] == [f.name for f in LISTED_FIELDS]
    assert record.names[-4:] == ["status", "reason", "error", "duplicate_of"]
    for name in ["quality", *registry.STAGES]:
        for f in registry.stage_class(name).writes:
            assert (f.name in record.names) != f.name.startswith("_"), f.name
    assert set(empty_row()) == set(registry.spss_schema(transient_too=True).names)


def test_the_engine_knows_no_domain_and_synth_imports_only_the_engine_of_curations_machinery():
    """Arrows point one way: curation/engine imports nothing of curation's stages; synth takes the stage
    contract, options and row status from the engine, not from curation's domain modules."""
    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    for f in (ROOT / "curation" / "engine").glob("*.py"):
        ours = {m for m in imports(f) if m.split(".")[0] in ("curation", "synth", "pipelines")}
        assert all(m.startswith("curation.engine") for m in ours), (f.name, ours)
    synth = {m for f in (ROOT / "synth").glob("*.py") for m in imports(f) if m.startswith("curation")}
    assert synth <= {"curation.engine", "curation.records", "curation.quality"}, synth
