"""The readable end-of-run summary printed by `infu curate`."""
from __future__ import annotations


def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    line = "-" * len(fmt(header))
    return [fmt(header), line] + [fmt(r) for r in cells[1:]]


def format_curate_summary(stats: dict, out_dir: str) -> str:
    rows = []
    for src, s in sorted(stats["by_source"].items()):
        rows.append([src, s.get("listed", s["inputs"]), s["inputs"], s["kept"],
                     sum(s["rejected"].values()), sum(s["quarantined"].values())])
    rows.append(["total", stats["manifest_rows"], stats["inputs"], stats["kept"], stats["rejected"], stats["quarantined"]])
    lines = ["", f"curate summary  ({out_dir}, {stats['elapsed_s']} s)"]
    lines += _table(["source", "listed", "rows", "kept", "rejected", "quarantined"], rows)
    if stats["by_reason"]:
        lines += ["", "reasons:"] + [f"  {r:<16} {n}" for r, n in stats["by_reason"].items()]
    for ex in stats.get("watermark_examples", []):
        lines.append(f"    watermark on {ex['source']}/{ex['path']}: {ex['watermark_text']} (score {ex['watermark']:.2f})")
    lines += ["", "stages:"] + stage_lines(stats["stages"])
    errors = [(src, e) for src, s in stats["by_source"].items() for e in s.get("errors", [])]
    if errors:
        lines += ["", "source problems:"] + [f"  {src}: {e}" for src, e in errors]
    ok = "yes" if stats["adds_up"] else f"NO (unaccounted {stats['unaccounted']}, duplicate ids {stats['duplicate_ids']})"
    lines += ["", f"accounting: every input kept, rejected or quarantined: {ok}"]
    return "\n".join(lines)


def stage_lines(stages: dict) -> list[str]:
    """One line per stage: whether it ran (loudly when not) and what it ran with."""
    lines = []
    for name, rep in stages.items():
        state = "ran" if rep.get("ran") else "DID NOT RUN"
        extra = ", ".join(f"{k}={v}" for k, v in rep.items() if k not in ("ran", "note"))
        lines.append(f"  {name:<10} {state}" + (f" ({extra})" if extra else "") + (f": {rep['note']}" if rep.get("note") else ""))
    return lines


def format_synth_summary(stats: dict, out_dir: str) -> str:
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
