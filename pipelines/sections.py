"""Each job's section of ``report.html`` (``pipelines/report.py`` puts the page together): what each filter
threw away and why (sampled thumbnails with the deciding scores), the kept data by bucket, captions,
synthetic pairs next to their source, the training curves and the benchmark. Charts are inline SVG
from matplotlib, images inline JPEG thumbnails. Rows are sampled with Parquet reads of the needed
columns only, row group by row group, so a report over tens of millions of rows takes seconds
(``bench/report.py``).
"""
from __future__ import annotations

import base64
import html
import io
import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curation.registry import scores, stage_of, stage_reasons
from infu_model.storage import as_path, parquet_file, read_parquet
from pipelines.job import finished_checkpoints, parquet_files

PER_GROUP = 12       # thumbnails per reason / bucket / status
MAX_FILES = 2000     # output files one sampling pass opens at most (~256 rows each: 0.5 M rows)
THUMB = 144          # thumbnail's longer side, pixels


# ------------------------------------------------------------------ reading ----
def count_by(files: list[str], column: str) -> Counter:
    """Value counts of one column, one row group at a time (nothing else is read)."""
    counts = Counter()
    for f in files:
        pf = parquet_file(f)
        if column not in pf.schema_arrow.names:
            continue
        for g in range(pf.num_row_groups):
            vc = pc.value_counts(pf.read_row_group(g, columns=[column])[column])
            counts.update(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())))
    return counts


def sample_by(files: list[str], key: str, columns: list[str], per_value: int = PER_GROUP, where=None,
              want: dict | None = None, max_files: int = MAX_FILES) -> dict:
    """Up to ``per_value`` rows (dicts of ``columns``) for each value of ``key``.

    Files are visited in a fixed shuffled order, so samples spread over the whole output; per file
    only the key column is read, the other columns only from row groups that supply a sample.
    It stops when ``want`` ({value: rows there are}) is satisfied, or after ``max_files`` files:
    then the page says how many files it looked at. ``where(table) -> mask`` narrows the rows."""
    rows: dict = {}
    have = Counter()  # rows taken per value
    order = random.Random(0).sample(files, len(files))
    visited = 0
    for f in order:
        if want is not None and all(have[v] >= min(per_value, n) for v, n in want.items()):
            break
        if visited == max_files:
            break
        visited += 1
        pf = parquet_file(f)
        names = pf.schema_arrow.names
        if key not in names:
            continue
        cols = [c for c in dict.fromkeys([key, *columns]) if c in names]
        probe = list(dict.fromkeys([key, *(where.columns if where else ())]))  # one read for the key and filter
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=probe)
            mask = where(t) if where else [True] * t.num_rows
            take = []
            for i, v in enumerate(t[key].to_pylist()):
                if mask[i] and have[v] < per_value:
                    have[v] += 1
                    take.append((i, v))
            if take:
                for (_, v), row in zip(take, pf.read_row_group(g, columns=cols).take([i for i, _ in take]).to_pylist()):
                    rows.setdefault(v, []).append(row)
    return Sample(rows, visited, len(files))


class Sample(dict):
    """Sampled rows by key value, and how much of the output was looked at for them."""

    def __init__(self, rows: dict, visited: int, files: int):
        super().__init__(rows)
        self.visited, self.files = visited, files

    def note(self) -> str:
        return "" if self.visited == self.files else f" (samples from {self.visited} of {self.files} files)"


class IdIn:
    """``where`` for ``sample_by``: rows whose ``column`` is one of ``ids``."""

    def __init__(self, column: str, ids):
        self.columns, self.ids = [column], pa.array(sorted(set(ids)), pa.string())

    def __call__(self, t: pa.Table) -> list[bool]:
        return pc.is_in(t[self.columns[0]], value_set=self.ids).to_pylist()


def images_by_id(files: list[str], ids, id_col: str = "id", image_col: str = "image") -> dict:
    return {k: row[image_col] for k, row in rows_by_id(files, ids, [image_col], id_col).items()}


def rows_by_id(files: list[str], ids, columns: list[str], id_col: str = "id") -> dict:
    if not ids:
        return {}
    found = sample_by(files, id_col, columns, per_value=1, where=IdIn(id_col, ids), want=dict.fromkeys(ids, 1))
    return {k: rows[0] for k, rows in found.items()}


# ------------------------------------------------------------------ drawing ----
def esc(x) -> str:
    return html.escape("" if x is None else str(x))


def thumb(data: bytes | None, caption: str = "", size: int = THUMB) -> str:
    """A figure with the image as an inline JPEG (decoded like the pipeline does: EXIF, CMYK,
    16-bit), or a grey box saying why there is none."""
    from PIL import Image

    from infu_model.images import decode

    body = f'<div class="noimg" style="width:{size}px;height:{size}px">no image</div>'
    if data:
        try:
            d = decode(data, max_side=size)
            buf = io.BytesIO()
            Image.fromarray(d.rgb).save(buf, "JPEG", quality=80)
            body = f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="">'
        except Exception as e:  # the row is shown anyway, with why its image is not
            body = f'<div class="noimg" style="width:{size}px;height:{size}px">{esc(type(e).__name__)}</div>'
    return f'<figure>{body}<figcaption>{caption}</figcaption></figure>'


def svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def figure(w: float = 7, h: float = 3, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, and no font files needed
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(w, h))


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def grid(title: str, figures: list[str]) -> str:
    return f'<h4>{esc(title)}</h4><div class="grid">{"".join(figures)}</div>' if figures else ""


# ---------------------------------------------------------------- sections ----
def funnel_steps(stats: dict) -> list[tuple[str, int, dict]]:
    """(stage, rows left after it, its reasons with counts) in the order rows meet the stages:
    quality, the model stages, then the run-wide dedup."""
    by_reason = dict(stats.get("by_reason", {}))
    order = ["quality"] + [s for s in stats.get("stages", {}) if s not in ("quality", "dedup")] + ["dedup"]
    left, steps = stats["inputs"], []
    for name in order:
        try:
            reasons = stage_reasons(name)
        except KeyError:  # a stage this version does not know
            reasons = ()
        mine = {r: by_reason.pop(r) for r in reasons if r in by_reason}
        left -= sum(mine.values())
        steps.append((name, left, mine))
    if by_reason:  # reasons no stage declares (a listing error, a new stage): shown, never hidden
        left -= sum(by_reason.values())
        steps.append(("other", left, by_reason))
    return steps


def funnel(stats: dict) -> str:
    steps = funnel_steps(stats)
    labels = ["inputs"] + [s for s, _, _ in steps]
    values = [stats["inputs"]] + [n for _, n, _ in steps]
    fig, ax = figure(5.5, 0.3 * len(labels) + 0.8)
    ax.barh(labels[::-1], values[::-1], color="#4c78a8")
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v}", va="center")
    ax.set_xlabel("rows left")
    rows = "".join(f'<tr><td>{esc(s)}</td><td class="n" data-funnel="{esc(s)}">{n}</td>'
                   f'<td>{esc(", ".join(f"{r} {c}" for r, c in mine.items()))}</td></tr>' for s, n, mine in steps)
    return (f'<div class="row"><div class="chart">{svg(fig)}</div><table class="funnel"><tr><th>after</th><th>rows left</th>'
            f'<th>removed here</th></tr><tr><td>inputs</td><td class="n" data-funnel="inputs">{stats["inputs"]}</td>'
            f'<td></td></tr>{rows}<tr><td>kept</td><td class="n" data-funnel="kept">{stats["kept"]}</td><td></td></tr>'
            f'</table></div>')


def watermark_evidence(row: dict) -> str:
    """Each watermark opinion that ran: the OCR rule and text, the classifier's probability and top label."""
    said = [f"watermark {fmt(row.get('watermark'))}"]
    if row.get("watermark_text") is not None:
        said.append(f"OCR: {esc(row['watermark_text'])}")
    if row.get("watermark_classifier") is not None:
        said.append(f"classifier {fmt(row['watermark_classifier'])} ({esc(row.get('watermark_label'))})")
    return "; ".join(said)


def kept_scores(row: dict) -> str:
    """What the dedup keep rule compared (curation/dedup.py KEEP_RULE), for a duplicate and its survivor."""
    said = [f"{fmt(row.get('width'))}x{fmt(row.get('height'))}", f"blur {fmt(row.get('blur'), 1)}"]
    if row.get("watermark") is not None:
        said.insert(0, watermark_evidence(row))
    if row.get("nsfw") is not None:
        said.insert(-1, f"nsfw {fmt(row['nsfw'])}")
    return ", ".join(said)


def evidence(row: dict) -> str:
    """The score that decided a curation row's fate, per reason."""
    r = row.get("reason")
    if r == "blurry":
        return f"blur {fmt(row.get('blur'), 1)}"
    if r in ("small_face", "no_face", "multiple_faces"):
        return f"faces {fmt(row.get('face_count'))}, face ratio {fmt(row.get('face_ratio'))}"
    if r == "nsfw":
        return f"nsfw {fmt(row.get('nsfw'))}"
    if r == "watermark":
        return watermark_evidence(row)
    if r in ("low_resolution", "too_large", "bad_aspect"):
        return f"{fmt(row.get('width'))}x{fmt(row.get('height'))}" + (f" {esc(row.get('error'))}" if row.get("error") else "")
    stage = stage_of(r) if r else None
    if stage is not None and stage.scores:  # a stage's own reason: the scores it declares
        return ", ".join(f"{esc(c)} {fmt(row.get(c))}" for c in stage.scores)
    return esc(row.get("error") or "")


def evidence_columns(files: list[str]) -> list[str]:
    """What the curate section reads of a rejected row: who it is, then every registered stage's scores
    (and the watermark's text and label), those the files hold."""
    want = ["id", "source", "path", "image", "reason", "error", "width", "height", "duplicate_of", *scores(),
            "watermark_text", "watermark_label"]
    have = set(parquet_file(files[0]).schema_arrow.names) if files else set(want)
    return [c for c in dict.fromkeys(want) if c in have]


def score_table(stats: dict) -> str:
    rows = [[c, s["rows"], s["min"], s["median"], s["p95"], s["max"]] for c, s in stats.get("scores", {}).items()]
    return "<h3>Scores</h3>" + table(["score", "rows", "min", "median", "p95", "max"], rows) if rows else ""


def curate_section(d: Path, stats: dict) -> str:
    rejected_files = parquet_files(d / "rejected")
    cols = evidence_columns(rejected_files)
    rejected = sample_by(rejected_files, "reason", cols, want=stats.get("by_reason", {}))
    kept_files = parquet_files(d / "kept")
    survivors = rows_by_id(kept_files, [r["duplicate_of"] for r in rejected.get("duplicate", []) if r["duplicate_of"]],
                           [c for c in cols if c not in ("id", "reason", "error", "duplicate_of")])
    parts = [f"<h3>Funnel</h3>{funnel(stats)}", "<h3>Per source</h3>",
             table(["source", "listed", "inputs", "kept", "rejected", "quarantined"],
                   [[s, v.get("listed"), v["inputs"], v["kept"], sum(v["rejected"].values()),
                     sum(v["quarantined"].values())] for s, v in stats.get("by_source", {}).items()]),
             score_table(stats), "<h3>Rejected and quarantined, by reason</h3>"]
    for reason, n in sorted(stats.get("by_reason", {}).items(), key=lambda kv: -kv[1]):
        figs = []
        for row in rejected.get(reason, []):
            cap = f"<b>{esc(row['source'])}</b> {esc(row['path'])}<br>{evidence(row)}<br><code>{esc(row['id'])}</code>"
            if reason == "duplicate" and row.get("duplicate_of"):
                kept = survivors.get(row["duplicate_of"], {})
                figs.append('<div class="pair">' + thumb(row["image"], f"{cap}<br>{kept_scores(row)}") +
                            thumb(kept.get("image"), f"kept instead: <code>{esc(row['duplicate_of'])}</code>"
                                                     f"<br>{kept_scores(kept) if kept else ''}") + "</div>")
            else:
                figs.append(thumb(row["image"], cap))
        parts.append(grid(f"{reason}: {n} rows (showing {len(figs)}{rejected.note()})", figs))
    buckets = stats.get("by_bucket") or count_by(kept_files, "bucket")
    parts.append("<h3>Kept, by bucket</h3>" + table(["bucket", "rows"], sorted(buckets.items(), key=lambda kv: -kv[1])))
    kept = sample_by(kept_files, "bucket", ["id", "source", "path", "image"], want=buckets)
    for bucket, rows in sorted(kept.items()):
        parts.append(grid(f"bucket {bucket}{kept.note()}",
                          [thumb(r["image"], f"{esc(r['source'])} {esc(r['path'])}") for r in rows]))
    return "".join(parts)


def caption_section(d: Path, stats: dict) -> str:
    rows = sample_by(parquet_files(d / "kept"), "status", ["id", "source", "path", "image", "captions"], 2 * PER_GROUP)
    figs = [thumb(r["image"], "<br>".join(f"<b>{esc(c['source'])}</b>: {esc(c['text'])}" for c in r["captions"] or [])
                  or "<i>no caption</i>", size=2 * THUMB) for r in rows.get("kept", [])]
    runs = [[n, "ran" if rep["ran"] else "did not run", rep.get("note", "")] for n, rep in stats.get("stages", {}).items()]
    return ("<h3>Captions</h3>" + table(["rows", "kept", "quarantined", "without any caption"],
                                        [[stats["inputs"], stats["kept"], stats["quarantined"],
                                          stats["rows_without_captions"]]])
            + table(["source", "captions"], sorted(stats.get("captions_per_source", {}).items()))
            + table(["captioner", "status", "note"], runs) + grid("caption samples", figs))


def synth_section(d: Path, stats: dict) -> str:
    from synth.prompts import load_prompts

    files = parquet_files(d / "kept", d / "rejected")
    cols = ["pair_id", "source_id", "prompt", "target_image", "id_similarity", "yaw", "pitch", "status", "reason"]
    samples = sample_by(files, "status", cols)
    run = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
    spss = [as_path(s["path"]) for s in run.get("sources", [])]
    spss_files = [f for p in spss for f in (parquet_files(p / "kept") or parquet_files(p))]
    sources = images_by_id(spss_files, [r["source_id"] for rows in samples.values() for r in rows])
    parts = ["<h3>Pairs</h3>", table(["planned", "kept", "rejected", "quarantined"],
                                     [[stats["pairs_planned"], stats["kept"], stats["rejected"], stats["quarantined"]]]),
             table(["reason", "pairs"], sorted(stats.get("by_reason", {}).items(), key=lambda kv: -kv[1]))]
    for status, rows in sorted(samples.items()):
        figs = ['<div class="pair">' + thumb(sources.get(r["source_id"]), "source") + thumb(
            r["target_image"], f"{esc(r['reason'] or status)}; ID sim {fmt(r['id_similarity'])}, yaw {fmt(r['yaw'], 0)}, "
                               f"pitch {fmt(r['pitch'], 0)}<br>{esc(r['prompt'])}") + "</div>" for r in rows]
        parts.append(grid(f"{status} (showing {len(figs)})", figs))
    cfg = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else {}
    bank = (cfg.get("prompts") or {}).get("file")
    try:
        tags = {p.id: p.tags for p in load_prompts(bank)} if bank else {}
    except (OSError, ValueError):
        tags = {}
    if tags:
        t = pa.concat_tables([read_parquet(f, columns=["prompt_id", "status"]) for f in files]) if files else None
        per_axis: dict = {}
        for pid, status in zip(*(t[c].to_pylist() for c in ("prompt_id", "status"))) if t is not None else ():
            for axis, value in tags.get(pid, {}).items():
                n = per_axis.setdefault(axis, {}).setdefault(value, [0, 0])
                n[0] += 1
                n[1] += status == "kept"
        parts.append("<h3>Acceptance per prompt axis</h3>" + "".join(
            f"<h4>{esc(axis)}</h4>" + table(["value", "pairs", "kept", "rate"],
                                             [[v, n, k, f"{k / n:.0%}"] for v, (n, k) in sorted(vals.items())])
            for axis, vals in sorted(per_axis.items())))
    return "".join(parts)


def train_section(d: Path, stats: dict) -> str:
    recs = [json.loads(ln) for ln in (d / "train_log.jsonl").read_text().splitlines() if ln.strip()]
    if not recs:
        return "<p>no training records yet</p>"
    fig, (a, b) = figure(10, 3, ncols=2)
    steps = [r["step"] for r in recs]
    a.plot(steps, [r["loss"] for r in recs])
    a.set(xlabel="step", ylabel="flow-matching loss")
    b.plot(steps, [r["lr"] for r in recs], color="#e45756")
    b.set(xlabel="step", ylabel="learning rate")
    last = recs[-1]
    ckpts = [p.name for p in finished_checkpoints(d)]
    return (f'<h3>Training</h3><div class="chart">{svg(fig)}</div>'
            + table(["steps", "last loss", "samples/s", "GPU memory (GiB)", "workers", "skipped records"],
                    [[last["step"], fmt(last["loss"], 4), fmt(last["samples_per_s"], 2), fmt(last.get("gpu_mem_gib"), 1),
                      last.get("workers"), json.dumps(last.get("skipped", {}))]])
            + table(["checkpoints", "final weights"], [[", ".join(ckpts), str(d / "final") if (d / "final").is_dir()
                                                        else "not yet"]]))


def eval_section(d: Path, stats: dict) -> str:
    s = json.loads((d / "summary.json").read_text())
    m = s["metrics"]
    parts = ["<h3>Benchmark (paper Table 1)</h3>",
             table(["method", "ID loss ↓", "CLIPScore ↑", "PickScore ↑", "copy-paste ↓", "no face"],
                   [[s.get("label"), fmt(m["id_loss"]), fmt(m["clip_score"]), fmt(m["pick_score"]), fmt(m["copy_paste"]),
                     f"{s['no_face']}/{s['images']}"]]),
             "<h3>Identity against copy-paste (MultiID-Bench; the held-out photos as ground truth)</h3>",
             table(["method", "Sim(GT) ↑", "Sim(Ref)", "CP∠ ↓"],
                   [[s.get("label"), fmt(m.get("sim_gt")), fmt(m.get("id_similarity")), fmt(m.get("copy_paste_angle"))]])]
    for axis, vals in sorted(s.get("by_axis", {}).items()):
        parts.append(f"<h4>by {esc(axis)}</h4>" + table(
            ["value", "n", "ID loss", "CLIPScore", "PickScore"],
            [[v, x["n"], fmt(x["id_loss"]), fmt(x["clip_score"]), fmt(x["pick_score"])] for v, x in sorted(vals.items())]))
    grids = [thumb(p.read_bytes(), esc(p.stem), size=3 * THUMB) for p in sorted((d / "grids").glob("*.jpg"))]
    return "".join(parts) + grid("grids", grids)


def identities_section(d: Path, stats: dict) -> str:
    """The identities found: how many, how they agree with the datasets' labels, the largest ones."""
    parts = ["<h3>Identities</h3>", table(
        ["records", "clustered", "without embedding", "identities", "of one photo", "largest", "pairs"],
        [[stats["inputs"], stats["clustered"], stats["no_embedding"], stats["identities"], stats["singletons"],
          stats["largest"], stats["pairs"]]])]
    a = stats.get("agreement")
    if a:
        parts.append("<h4>against the datasets' own labels (embeddings alone)</h4>" + table(
            ["labelled faces", "people", "clusters", "purity", "inverse purity", "pairwise precision", "pairwise recall"],
            [[a["labelled_faces"], a["labels"], a["clusters"], fmt(a["purity"]), fmt(a["inverse_purity"]),
              fmt(a["pairwise_precision"]), fmt(a["pairwise_recall"])]]))
    top = read_parquet(d / "identities.parquet").sort_by([("size", "descending")]).slice(0, 10).to_pylist()
    parts.append("<h4>largest identities</h4>" + table(
        ["identity", "photos", "sources", "label", "label share"],
        [[r["identity"], r["size"], ", ".join(r["sources"]), r["label"] or "", fmt(r["label_share"])] for r in top]))
    return "".join(parts)
