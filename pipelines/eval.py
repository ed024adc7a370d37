"""`infu eval`: generate the portrait benchmark with a model, score it, summarise it like Table 1.

    OUT/images/<identity>/<prompt_id>_<seed>.png   every generated item (a rerun skips those present)
    OUT/scores.parquet   one row per item: ID loss, copy-paste index, CLIPScore, PickScore (null = not run)
    OUT/summary.json     means, counts, which scorers ran, per-axis breakdown
    OUT/summary.md       the paper's Table 1 row for this model (+ copy-paste index, images without a face)
    OUT/grids/<identity>.jpg

Identities (``--ids DIR``): ``DIR/ids.yaml`` lists ``{name, gender, reference, held_out: [...]}``
(paths relative to DIR); without it every sub-folder is one identity (``reference.*`` or the
first photo is the reference, the others are held out) and every loose photo is one identity.
Gender comes from the manifest; an identity without one gets the gender-neutral prompts only.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from infu_model.faces import analyzer_models, analyzer_needs
from infu_model.hub import FOLDER, ModelRef, Need
from infu_model.images import open_rgb
from infu_model.storage import as_path, location, read_parquet, write_parquet
from infu_model.metrics import copy_paste_angle, copy_paste_index, id_loss, match_faces, paired_bootstrap, sim_gt
from curation.engine import ConfigError, between, unknown_keys
from pipelines.config import JobConfig, packaged_path, read_yaml, stage_models
from pipelines.job import RayOptions, job_run, write_whole
from synth.generate import GenerateStage, GenerationBlock, LoraOptions, ModelOptions, generate_stage
from synth.prompts import fitting, load_prompts, normalise_gender
from synth.records import derived_seed

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
METRICS = [("id_loss", "ID Loss↓", False), ("clip_score", "CLIPScore↑", True), ("pick_score", "PickScore↑", True),
           ("copy_paste", "Copy-paste↓", False),
           # MultiID-Bench's (infu_model/metrics.py), the held-out photos as its ground truth
           ("sim_gt", "Sim(GT)↑", True), ("id_similarity", "Sim(Ref)", True), ("copy_paste_angle", "CP∠↓", False)]
SCORE_SCHEMA = pa.schema([
    ("identity", pa.string()), ("gender", pa.string()), ("prompt_id", pa.string()), ("prompt", pa.string()),
    ("seed", pa.int64()), ("tags", pa.string()), ("image", pa.string()), ("face_found", pa.bool_()),
    ("faces", pa.int32()), ("id_similarity", pa.float32()), ("id_loss", pa.float32()), ("copy_paste", pa.float32()),
    ("sim_gt", pa.float32()), ("copy_paste_angle", pa.float32()), ("clip_score", pa.float32()),
    ("pick_score", pa.float32())])


# ---------------------------------------------------------------- config ---
@dataclass(frozen=True)
class IdMetricOptions:
    faces: dict                          # the face backend's block (infu_model.faces checks it)
    no_face_id_loss: float = between(0, 2)   # a generated image without a face gets this ID loss


@dataclass(frozen=True)
class ScorerOptions:
    model: ModelRef | None               # path or hf://... (infu_model/hub.py); null: not run (and it says so)
    processor: ModelRef | None           # its tokenizer + processor when not beside the weights
    device: str


@dataclass(frozen=True)
class BootstrapOptions:
    samples: int = between(1)
    ci: float = between(0, 1)
    seed: int


@dataclass(frozen=True)
class GridOptions:
    thumb: int = between(8)
    columns: int = between(1)
    max_images: int = between(1)


@dataclass(frozen=True)
class EvalConfig(JobConfig):
    """``configs/eval.yaml``, typed."""
    # what only the scoring reads: every run scores every image again, so these may change on a rerun
    # without mixing two settings in one result (the images' settings may not)
    RESUMABLE = ("id_metric", "clipscore", "pickscore", "score_batch", "bootstrap", "label", "grid")
    ray: RayOptions
    progress: bool
    benchmark: str
    seed: int
    seeds_per_prompt: int = between(1)
    label: str | None
    model: ModelOptions
    loras: tuple[LoraOptions, ...]
    generation: GenerationBlock
    id_metric: IdMetricOptions
    clipscore: ScorerOptions
    pickscore: ScorerOptions
    score_batch: int = between(1)
    bootstrap: BootstrapOptions
    grid: GridOptions

    @cached_property
    def generate(self) -> GenerateStage:
        return generate_stage(self.model, self.generation, self.loras)

    def models(self) -> list[tuple[str, str, str]]:
        scorers = [(f"{key}: CLIP", c.device, "torch") for key, c in (("clipscore", self.clipscore),
                                                                       ("pickscore", self.pickscore)) if c.model]
        faces = [(f"id_metric: {m}", d, r) for m, d, r in analyzer_models(self.id_metric.faces)]
        return [*stage_models([self.generate]), *faces, *scorers]

    def needs(self) -> list:
        scorers = [n for key, c in (("CLIPScore", self.clipscore), ("PickScore", self.pickscore)) if c.model
                   for n in (*Need.of(c.model, FOLDER, key), *Need.of(c.processor, FOLDER, f"{key} processor"))]
        return [*self.generate.needs(), *analyzer_needs(self.id_metric.faces), *scorers]


# ------------------------------------------------------------- identities ---
@dataclass
class Identity:
    name: str
    reference: Path
    gender: str | None = None
    held_out: list[Path] = field(default_factory=list)


def _photos(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT)


def load_identities(ids_dir: str | Path) -> list[Identity]:
    root = location(ids_dir)  # a folder, or a prefix in object storage
    manifest = root / "ids.yaml"
    if manifest.is_file():
        out = [_listed(e, root, f"{manifest}: identities[{i}]") for i, e in enumerate(_entries(manifest))]
        for ident in out:
            for p in [ident.reference, *ident.held_out]:
                if not p.is_file():
                    raise FileNotFoundError(f"{manifest}: {ident.name}: photo not found: {p}")
    else:
        out = [Identity(p.stem, p) for p in _photos(root)]
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            photos = _photos(d)
            if photos:
                ref = next((p for p in photos if p.stem.lower() in ("reference", "ref")), photos[0])
                out.append(Identity(d.name, ref, None, [p for p in photos if p != ref]))
    names = [i.name for i in out]
    if not out:
        raise FileNotFoundError(f"no identity photos under {root}")
    if len(set(names)) != len(names):
        raise ValueError(f"identity names must be unique: {names}")
    return out


def _entries(manifest: Path) -> list:
    entries = read_yaml(manifest, "identity list").get("identities")
    if not isinstance(entries, list):
        raise ConfigError(f"{manifest}: identities: expected a list of {{name, gender, reference, held_out}}")
    return entries


def _listed(e, root: Path, where: str) -> Identity:
    """One ``ids.yaml`` entry as an Identity (photo paths relative to the list's folder)."""
    if not isinstance(e, dict) or not e.get("name") or not e.get("reference"):
        raise ConfigError(f"{where}: needs at least name and reference, got {e!r}")
    unknown_keys(e, ("name", "gender", "reference", "held_out"), where)
    held = e.get("held_out") or []
    if not isinstance(held, list):
        raise ConfigError(f"{where}.held_out: expected a list of photo paths, got {held!r}")
    return Identity(file_name(e["name"], f"{where}.name"), root / str(e["reference"]), normalise_gender(e.get("gender")),
                    [root / str(h) for h in held])


def file_name(value, where: str) -> str:
    """``value`` as one path component of the output (identity names and prompt ids name its files):
    a name that would lead out of the output folder is refused."""
    text = str(value)
    if not text or text in (".", "..") or any(c in text for c in "/\\\0"):
        raise ConfigError(f"{where}: {text!r} cannot name a file (no /, \\, or dot-only names)")
    return text


def check_photos(identities: list[Identity]) -> dict:
    """Every identity photo decoded (an error names the file, before any model loads): {path: RGB}, which
    scoring uses (a benchmark's few photos; decoded once)."""
    return {p: open_rgb(p) for ident in identities for p in [ident.reference, *ident.held_out]}


def plan_items(identities: list[Identity], prompts, cfg: EvalConfig) -> list[dict]:
    """Every (identity, fitting prompt, seed); seeds depend on the prompt only, so models pair up."""
    items = []
    for ident in identities:
        for p in fitting(prompts, ident.gender):
            for j in range(cfg.seeds_per_prompt):
                seed = derived_seed(cfg.seed, p.id, j)
                items.append({"identity": ident.name, "gender": ident.gender, "prompt_id": p.id, "prompt": p.text,
                              "seed": seed, "tags": json.dumps(p.tags, sort_keys=True),
                              "image": f"images/{ident.name}/{file_name(p.id, 'prompt id')}_{seed}.png"})
    return items


# ------------------------------------------------------------- generation ---
def generate(items: list[dict], identities: list[Identity], cfg: EvalConfig, out: Path,
             ray_address: str | None = None, log=print) -> list[dict]:
    """Generate the items whose image is missing, on a Ray Data pool of InfU actors; returns the failures."""
    import ray

    from pipelines.ray_runtime import init_ray
    from pipelines.ray_stages import add_stage, plan_pools
    from synth.records import SYNTH_ROW_SCHEMA

    done = generated(out)
    todo = [it for it in items if it["image"] not in done]
    if not todo:
        return []
    init_ray(ray_address, cfg.ray, cfg.progress)
    log(f"eval: generating {len(todo)} of {len(items)} images")
    refs = {i.name: i.reference.read_bytes() for i in identities}
    rows = [{"pair_id": it["image"], "source_id": it["identity"], "prompt": it["prompt"], "seed": it["seed"],
             "status": "pending", "_source_image": refs[it["identity"]]} for it in todo]
    rows.sort(key=lambda r: r["source_id"])  # a batch mostly holds one identity: one embedding per batch
    [stage] = plan_pools([cfg.generate], log=log)
    ds = add_stage(ray.data.from_arrow(pa.Table.from_pylist(rows, schema=SYNTH_ROW_SCHEMA)), stage, SYNTH_ROW_SCHEMA)
    failures = []
    for batch in ds.select_columns(["pair_id", "source_id", "status", "reason", "error", "target_image"]).iter_batches(
            batch_format="pyarrow", batch_size=None):
        for r in batch.to_pylist():
            if r["status"] != "pending":
                failures.append({k: r[k] for k in ("pair_id", "source_id", "reason", "error")})
                continue
            write_whole(out / r["pair_id"], r["target_image"])
    return failures


def generated(out) -> set[str]:
    """The images already generated in ``out`` (``images/<identity>/<file>``), in one listing."""
    images = out / "images"
    return {f"images/{p.parent.name}/{p.name}" for p in images.rglob("*.png")} if images.is_dir() else set()


# ---------------------------------------------------------------- scoring ---
class Scorers:
    """The face backend for ID loss and the CLIP-family scorers that have weights here."""

    def __init__(self, cfg: EvalConfig):
        from infu_model.faces import make_face_analyzer
        from infu_model.scoring import ClipEmbedder, ScorerMissing

        self.faces = make_face_analyzer(cfg.id_metric.faces)
        self.no_face_loss = cfg.id_metric.no_face_id_loss
        self.clip, self.reports = {}, {"id_loss": {"ran": True, "backend": self.faces.name}}
        for key, name in (("clipscore", "clip_score"), ("pickscore", "pick_score")):
            c = getattr(cfg, key)
            try:
                self.clip[name] = ClipEmbedder(c.model, c.processor, c.device, what=f"{key} model")
                self.reports[name] = {"ran": True, "model": str(c.model)}
            except ScorerMissing as e:
                self.reports[name] = {"ran": False, "note": str(e)}

    def embedding(self, image: Image.Image) -> np.ndarray | None:
        """The embedding of an identity photo's face (its first: one person per photo)."""
        return next(iter(self.embeddings(image, most=1)), None)

    def embeddings(self, image: Image.Image, most: int | None = None) -> list[np.ndarray]:
        """The embedding of every face in ``image`` (of its ``most`` largest): only those are embedded."""
        rgb = np.asarray(image)
        return [self.faces.embed(rgb, face) for face in self.faces.detect(rgb)[:most]]

    def face_scores(self, row: dict, faces: list, ref: np.ndarray | None, held: list) -> None:
        """``row``'s face metrics: those of the face matched to its identity (``match_faces``: with one
        identity, the face most like its reference), the held-out photos ``held`` as ground truth."""
        matched = match_faces(faces, [ref]) if ref is not None else []
        emb = faces[matched[0][0]] if matched else None
        row["face_found"], row["faces"] = bool(faces), len(faces)
        for key in ("id_similarity", "id_loss", "copy_paste", "sim_gt", "copy_paste_angle"):
            row[key] = None
        if emb is not None:
            row["id_loss"] = float(id_loss(emb, ref)[0])
            row["id_similarity"] = 1.0 - row["id_loss"]
            if held:
                row["copy_paste"] = copy_paste_index(emb, ref, held)
                row["sim_gt"] = sim_gt(emb, held)
                row["copy_paste_angle"] = copy_paste_angle(emb, ref, held)
        elif ref is not None:
            row["id_loss"] = self.no_face_loss


def score(items: list[dict], identities: list[Identity], photos: dict, cfg: EvalConfig,
          out: Path) -> tuple[pa.Table, dict]:
    """Per-image scores (written to OUT/scores.parquet) and what each scorer ran with; ``photos``: the
    identity photos as the check decoded them."""
    sc = Scorers(cfg)
    refs, held = {}, {}
    for ident in identities:
        refs[ident.name] = sc.embedding(photos[ident.reference])
        held[ident.name] = [e for e in (sc.embedding(photos[p]) for p in ident.held_out) if e is not None]
    sc.reports["id_loss"]["references_without_face"] = sorted(n for n, e in refs.items() if e is None)
    done = generated(out)
    rows = [dict(it) for it in items if it["image"] in done]
    batch = cfg.score_batch
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        images = [open_rgb(out / r["image"]) for r in chunk]  # decoded once for every scorer
        for r, im in zip(chunk, images):
            sc.face_scores(r, sc.embeddings(im), refs[r["identity"]], held[r["identity"]])
        for name in ("clip_score", "pick_score"):
            vals = sc.clip[name].cosine(images, [r["prompt"] for r in chunk]) if name in sc.clip else [None] * len(chunk)
            for r, v in zip(chunk, vals):
                r[name] = None if v is None else float(v)
    table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
    write_parquet(table, out / "scores.parquet")
    return table, sc.reports


# ---------------------------------------------------------------- summary ---
def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def summarise(table: pa.Table, reports: dict, planned: int, failures: list[dict], label: str) -> dict:
    rows = table.to_pylist()
    s = {"label": label, "planned": planned, "images": len(rows), "missing": planned - len(rows),
         "no_face": sum(not r["face_found"] for r in rows), "generation_failures": failures,
         "adds_up": planned == len(rows) + len(failures), "scorers": reports,
         "metrics": {m: _mean(r[m] for r in rows) for m, _, _ in METRICS},
         "counts": {m: sum(r[m] is not None for r in rows) for m, _, _ in METRICS}}
    axes: dict[str, dict[str, dict]] = {}
    for r in rows:
        for axis, value in json.loads(r["tags"] or "{}").items():
            axes.setdefault(axis, {}).setdefault(str(value), []).append(r)
    s["by_axis"] = {axis: {v: {m: _mean(r[m] for r in rs) for m, _, _ in METRICS} | {"n": len(rs)}
                           for v, rs in sorted(vals.items())} for axis, vals in sorted(axes.items())}
    return s


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def table1(summary: dict) -> str:
    head = "| Method | " + " | ".join(t for _, t, _ in METRICS) + " | No face |"
    sep = "|" + "---|" * (len(METRICS) + 2)
    m = summary["metrics"]
    row = f"| {summary['label']} | " + " | ".join(_fmt(m[k]) for k, _, _ in METRICS) + \
          f" | {summary['no_face']}/{summary['images']} |"
    notes = [f"- {k}: not run ({r.get('note', '')})" for k, r in summary["scorers"].items() if not r.get("ran")]
    notes.append(f"- ID metric backend: {summary['scorers']['id_loss']['backend']}; images without a face count "
                 f"with the configured worst ID loss; copy-paste index, Sim(GT) and CP∠ (MultiID-Bench) over "
                 f"identities with held-out photos, which stand for its ground truth.")
    if summary["missing"]:
        notes.append(f"- {summary['missing']} planned images are missing (generation failures: "
                     f"{len(summary['generation_failures'])})")
    return "\n".join([head, sep, row, "", *notes]) + "\n"


def grids(table: pa.Table, out: Path, g: GridOptions) -> None:
    thumb, cols, cap = g.thumb, g.columns, g.max_images
    by_id: dict[str, list[str]] = {}
    for r in table.select(["identity", "image"]).to_pylist():
        by_id.setdefault(r["identity"], []).append(r["image"])
    for ident, paths in by_id.items():
        paths = paths[:cap]
        rows_n = -(-len(paths) // cols)
        sheet = Image.new("RGB", (thumb * min(cols, len(paths)), thumb * rows_n), "white")
        for k, p in enumerate(paths):
            im = open_rgb(out / p)
            im.thumbnail((thumb, thumb))
            sheet.paste(im, ((k % cols) * thumb, (k // cols) * thumb))
        buf = io.BytesIO()
        sheet.save(buf, "JPEG", quality=90)
        write_whole(out / "grids" / f"{ident}.jpg", buf.getvalue())


def check_eval(ids_dir, cfg: EvalConfig) -> tuple[list[Identity], list[dict], dict]:
    """Everything an eval run can be refused for, before it touches its output or loads a model
    (the config was checked when it was parsed): the model folders, the identities and their
    photos, the benchmark. Returns the identities, the planned items and the decoded photos."""
    cfg.model.check()
    identities = load_identities(ids_dir)
    photos = check_photos(identities)
    items = plan_items(identities, load_prompts(packaged_path(cfg.benchmark)), cfg)
    if not items:
        raise ValueError(f"no benchmark prompt fits the identities in {ids_dir} (genders: "
                         f"{sorted({str(i.gender) for i in identities})})")
    return identities, items, photos


@job_run("eval", check_eval)
def run_eval(ids_dir, out, cfg: EvalConfig, *, checked, claim, ray_address: str | None = None, overwrite: bool = False,
             log=print) -> dict:
    """Generate and score the benchmark into ``out``; a rerun resumes (and scores every image again),
    one whose settings would change the images (prompts, seeds, model, generation...) is refused unless
    ``overwrite``."""
    from pipelines.job import SourceSpec, start_run, write_json

    t0 = time.time()
    identities, items, photos = checked.found
    start_run(claim, cfg, [SourceSpec("ids", "input", str(as_path(ids_dir).resolve()))], overwrite,
              contents={"benchmark": packaged_path(cfg.benchmark)})
    out = as_path(out)
    failures = generate(items, identities, cfg, out, ray_address, log)
    table, reports = score(items, identities, photos, cfg, out)
    summary = summarise(table, reports, len(items), failures, cfg.label or Path(str(cfg.model.path)).name)
    summary["elapsed_s"] = round(time.time() - t0, 2)
    write_whole(out / "summary.md", table1(summary).encode())
    write_json(out / "summary.json", summary)  # last: the file that says the run is done
    grids(table, out, cfg.grid)
    return summary


# ---------------------------------------------------------------- compare ---
KEYS = ["identity", "prompt_id", "seed"]


def compare(a_dir, b_dir, boot: BootstrapOptions) -> dict:
    """B against A on the items both scored: per metric the means, B - A and its bootstrap CI."""
    for d in (a_dir, b_dir):
        if not (as_path(d) / "scores.parquet").is_file():
            raise FileNotFoundError(f"{d} holds no scores.parquet: not an `infu eval` output")
    a, b = (read_parquet(as_path(d) / "scores.parquet").to_pylist() for d in (a_dir, b_dir))
    b_by = {tuple(r[k] for k in KEYS): r for r in b}
    pairs = [(r, b_by[tuple(r[k] for k in KEYS)]) for r in a if tuple(r[k] for k in KEYS) in b_by]
    out = {"a": str(a_dir), "b": str(b_dir), "paired_items": len(pairs), "only_a": len(a) - len(pairs),
           "only_b": len(b) - len(pairs), "metrics": {}}
    for m, title, higher in METRICS:
        both = [(x[m], y[m]) for x, y in pairs if x.get(m) is not None and y.get(m) is not None]  # (older runs: fewer)
        res = paired_bootstrap([x for x, _ in both], [y for _, y in both], boot.samples, boot.ci, boot.seed)
        res.update(title=title, higher_is_better=higher, a=_mean(x for x, _ in both), b=_mean(y for _, y in both))
        out["metrics"][m] = res
    return out


def compare_markdown(c: dict, ci: float = 0.95) -> str:
    lines = [f"A = {c['a']}\nB = {c['b']}\n{c['paired_items']} paired items (only in A: {c['only_a']}, "
             f"only in B: {c['only_b']})\n", f"| Metric | A | B | B - A | {int(ci * 100)}% CI |", "|---|---|---|---|---|"]
    for r in c["metrics"].values():
        ci_txt = "n/a" if r["diff"] is None else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        diff = "n/a" if r["diff"] is None else f"{r['diff']:+.4f}"
        lines.append(f"| {r['title']} | {_fmt(r['a'], 4)} | {_fmt(r['b'], 4)} | {diff} | {ci_txt} |")
    return "\n".join(lines) + "\n"
