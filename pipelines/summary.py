"""What the terminal shows when a job ends (``summary``), and its line in ``infu run``'s table
(``counts``: rows in, rows out); the job table (pipelines/jobs.py) names them."""
from __future__ import annotations


def text_table(header: list[str], rows: list[list]) -> list[str]:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    line = "-" * len(fmt(header))
    return [fmt(header), line] + [fmt(r) for r in cells[1:]]


def curate_summary(stats: dict, out_dir) -> str:
    rows = []
    for src, s in sorted(stats["by_source"].items()):
        rows.append([src, s.get("listed", s["inputs"]), s["inputs"], s["kept"],
                     sum(s["rejected"].values()), sum(s["quarantined"].values())])
    rows.append(["total", stats["manifest_rows"], stats["inputs"], stats["kept"], stats["rejected"], stats["quarantined"]])
    lines = ["", f"curate summary  ({out_dir}, {stats['elapsed_s']} s)"]
    lines += text_table(["source", "listed", "rows", "kept", "rejected", "quarantined"], rows)
    if stats.get("groups"):
        lines.append(f"multi-ID records (photos of several people, each face usable): {stats['groups']} in "
                     f"{out_dir}/groups/")
    if stats["by_reason"]:
        lines += ["", "reasons:"] + [f"  {r:<16} {n}" for r, n in stats["by_reason"].items()]
    for ex in stats.get("watermark_examples", []):
        said = [ex["watermark_text"]] if ex.get("watermark_text") is not None else []
        if ex.get("watermark_classifier") is not None:
            said.append(f"classifier {ex['watermark_classifier']:.2f} ({ex['watermark_label']})")
        lines.append(f"    watermark on {ex['source']}/{ex['path']}: {'; '.join(said)} (score {ex['watermark']:.2f})")
    lines += ["", "stages:"] + stage_lines(stats["stages"])
    errors = [(src, e) for src, s in stats["by_source"].items() for e in s.get("errors", [])]
    if errors:
        lines += ["", "source problems:"] + [f"  {src}: {e}" for src, e in errors]
    ok = "yes" if stats["adds_up"] else f"NO (unaccounted {stats['unaccounted']}, duplicate ids {stats['duplicate_ids']})"
    kept = "kept (or kept as a multi-ID record)" if stats.get("groups") else "kept"
    lines += ["", f"accounting: every input {kept}, rejected or quarantined: {ok}"]
    return "\n".join(lines)


def stage_lines(stages: dict) -> list[str]:
    """One line per stage: whether it ran (loudly when not) and what it ran with."""
    lines = []
    for name, rep in stages.items():
        state = "ran" if rep.get("ran") else "DID NOT RUN"
        extra = ", ".join(f"{k}={v}" for k, v in rep.items() if k not in ("ran", "note"))
        lines.append(f"  {name:<10} {state}" + (f" ({extra})" if extra else "") + (f": {rep['note']}" if rep.get("note") else ""))
    return lines


def synth_summary(stats: dict, out_dir) -> str:
    lines = ["", f"synth summary  ({out_dir}, {stats['elapsed_s']} s)"]
    planned = stats["pairs_planned"] if stats["pairs_planned"] is not None else "(set by the gender classifier)"
    lines += [f"  identity sources {stats['sources_selected']}   pairs planned {planned}   "
              f"written this run {stats['written_this_run']}",
              f"  kept {stats['kept']}   rejected {stats['rejected']}   quarantined {stats['quarantined']}"]
    if stats["by_reason"]:
        lines += ["", "ID filter and other decisions:"] + [f"  {r:<18} {n}" for r, n in stats["by_reason"].items()]
    for key in ("kept_id_similarity", "kept_id_distance"):
        if stats.get(key):
            lines.append(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in stats[key].items()))
    lines += ["", "stages:"] + stage_lines(stats["stages"])
    ok = "yes" if stats["adds_up"] else (f"NO (unaccounted pairs {stats['unaccounted']}, sources "
                                         f"{stats['sources_unaccounted']}, duplicate ids {stats['duplicate_ids']})")
    lines += ["", f"accounting: every planned pair kept, rejected or quarantined: {ok}"]
    return "\n".join(lines)


def caption_summary(stats: dict, out_dir) -> str:
    lines = ["", f"caption summary  ({out_dir}, {stats['elapsed_s']} s)",
             f"  rows: {stats['inputs']}  kept: {stats['kept']}  quarantined: {stats['quarantined']}  "
             f"without any caption: {stats['rows_without_captions']}"]
    lines += [f"  captions from {src:<10} {n}" for src, n in sorted(stats["captions_per_source"].items())]
    lines += [f"  dropped from {src:<11} " + ", ".join(f"{r} {n}" for r, n in sorted(d.items()))
              for src, d in sorted(stats["caption_drops"].items())]
    lines += stage_lines(stats["stages"])
    ok = "yes" if stats["adds_up"] else f"NO (unaccounted {stats['unaccounted']})"
    return "\n".join(lines + [f"  accounting: every input kept or quarantined: {ok}"])


def train_summary(stats: dict, out_dir) -> str:
    return (f"trained {stats['steps']} steps, final loss {stats['final_loss']:.4f}, skipped records "
            f"{stats['skipped']}; weights in {stats['output']}/final")


def eval_summary(stats: dict, out_dir) -> str:
    from infu_model.storage import as_path

    out = as_path(out_dir)
    return ((out / "summary.md").read_text() + f"{stats['images']} images scored ({stats['no_face']} "
            f"without a face) in {stats['elapsed_s']} s; per-image scores: {out / 'scores.parquet'}")


def curate_counts(stats: dict) -> tuple:
    return stats["inputs"], stats["kept"]


caption_counts = curate_counts


def synth_counts(stats: dict) -> tuple:
    return stats["sources_selected"], stats["kept"]


def train_counts(stats: dict) -> tuple:
    return "-", f"{stats['steps']} steps"


def eval_counts(stats: dict) -> tuple:
    return stats["images"], stats["images"] - stats["no_face"]


def identities_summary(stats: dict, out_dir) -> str:
    lines = ["", f"identities summary  ({out_dir}, {stats['elapsed_s']} s)",
             f"  faces clustered    {stats['clustered']} of {stats['inputs']} ({stats['no_embedding']} without an "
             f"embedding), in {stats['records']} records ({stats['multi_id_records']} of several people)  "
             f"[{stats['backend'] or 'no embeddings'}, {stats['metric']}, index {stats['index']}]",
             f"  identities         {stats['identities']} ({stats['singletons']} of one photo; the largest "
             f"{stats['largest']})",
             f"  cross-photo pairs  {stats['pairs']} for {stats['faces_with_pairs']} faces"]
    a = stats.get("agreement")
    if a:
        lines.append(f"  against the datasets' own labels ({a['labelled_faces']} faces, {a['labels']} people): purity "
                     f"{a['purity']:.3f}, inverse purity {a['inverse_purity']:.3f}, pairwise precision "
                     f"{a['pairwise_precision']:.3f}, recall {a['pairwise_recall']:.3f} (embeddings alone"
                     + ("; the labels then joined their faces)" if stats["labels"] == "trust" else ")"))
    ok = "yes" if stats["adds_up"] else "NO"
    lines += ["", f"accounting: every face clustered or counted without an embedding: {ok}"]
    return "\n".join(lines)


def identities_counts(stats: dict) -> tuple:
    return stats["inputs"], f"{stats['identities']} identities"
