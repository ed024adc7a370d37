"""``infu report DIR``: one self-contained HTML page (``DIR/report.html``) a person can look at: a header
(each job's time and accounting, the commands, the package versions) and each job's own section
(``pipelines/sections.py``, named in the job table). No server, no network.
"""
from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path

from infu_model.storage import as_path
from pipelines.job import owner, write_whole
from pipelines.jobs import JOBS
from pipelines.sections import esc, fmt, table

VERSIONS = ("infu-engine", "ray", "torch", "diffusers", "transformers", "pyarrow", "insightface", "nudenet",
            "rapidocr-onnxruntime")


def kind(d: Path) -> str | None:
    """The job whose output ``d`` is (its run.json says), when it has something to show."""
    k = owner(d)
    if k == "legacy" and (d / "stats.json").is_file():  # a row job's folder from before run.json named its job
        keys = json.loads((d / "stats.json").read_text())
        k = "curate" if "by_source" in keys else "caption" if "captions_per_source" in keys else "synth"
    return k if k in JOBS and (d / JOBS[k].result).is_file() else None


def section(d: Path, k: str) -> tuple[str, dict]:
    """(HTML, stats) for one job folder of kind ``k`` (its section function in the job table)."""
    stats = json.loads((d / "stats.json").read_text()) if (d / "stats.json").is_file() else {}
    return JOBS[k].section(d, stats), stats


# -------------------------------------------------------------------- page ----
CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{margin-bottom:0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
td.n{text-align:right}.grid{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;max-width:200px;font-size:11px;overflow-wrap:anywhere}
figure img{display:block;max-width:100%}.noimg{background:#ddd;display:flex;align-items:center;justify-content:center}
.pair{display:flex;gap:4px;border:1px solid #eee;padding:4px}.ok{color:#2a7}.bad{color:#c33;font-weight:bold}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}section{border-top:2px solid #4c78a8;margin-top:24px}.chart{flex:0 0 auto}pre{background:#f6f6f6;
padding:8px;overflow:auto;max-height:400px}code{font-size:10px}"""


def versions() -> list[list[str]]:
    out = []
    for name in VERSIONS:
        try:
            out.append([name, metadata.version(name)])
        except metadata.PackageNotFoundError:
            pass
    return out


def header(root: Path, jobs: list[tuple[Path, str, dict]]) -> str:
    runs = root / "_work" / "runs.jsonl"
    cmds = [json.loads(ln) for ln in runs.read_text().splitlines()] if runs.is_file() else []
    rows = []
    for d, k, stats in jobs:
        stage = json.loads((d / "pipeline_stage.json").read_text())["report"] if (d / "pipeline_stage.json").is_file() else {}
        seconds = stage.get("seconds", stats.get("elapsed_s"))
        adds = stats.get("adds_up")
        rows.append(f"<tr><td>{esc(d.name if d != root else k)}</td><td>{esc(k)}</td><td>{fmt(seconds, 1)}</td><td "
                    f'class="{"ok" if adds else "bad" if adds is False else ""}">'
                    f'{"yes" if adds else "NO" if adds is False else "n/a"}</td><td>{esc(d)}</td></tr>')
    parts = ["<table><tr><th>job</th><th>kind</th><th>seconds</th><th>accounting adds up</th><th>folder</th></tr>"
             + "".join(rows) + "</table>"]
    if cmds:
        parts.append(table(["command", "started", "seconds", "ended"],
                           [[" ".join(c["argv"]), c["started"], fmt(c.get("seconds"), 1), c.get("ended", "running")]
                            for c in cmds[-10:]]))
    parts.append(table(["package", "version"], versions()))
    return (f"<h1>InfU data engine report</h1><p>{esc(root.resolve())} · written {time.strftime('%Y-%m-%d %H:%M:%S')}"
            f'</p><div class="row">{"".join(parts)}</div>')


def config_block(d: Path) -> str:
    f = d / "config.yaml"
    return f"<details><summary>resolved config ({esc(f)})</summary><pre>{esc(f.read_text())}</pre></details>" \
        if f.is_file() else ""


def job_folders(root: Path) -> list[tuple[Path, str]]:
    """(folder, kind): the folder itself when it is a job's output, else the stage folders of an
    `infu run` root."""
    if k := kind(root):
        return [(root, k)]
    if owner(root) != "run":  # report.html goes only into a job's own folder
        return []
    from pipelines.run import STAGES

    return [(root / s.folder, k) for s in STAGES if (root / s.folder).is_dir() and (k := kind(root / s.folder))]


def write_report(out_dir):
    root = as_path(out_dir)
    folders = job_folders(root)
    if not folders:
        raise FileNotFoundError(f"{root} holds no finished job output (a run.json with stats.json, train_log.jsonl "
                                f"or summary.json), nor the stage folders of an `infu run` root: nothing to report")
    jobs, bodies = [], []
    for d, k in folders:
        body, stats = section(d, k)
        jobs.append((d, k, stats))
        bodies.append(f'<section id="{esc(k)}"><h2>{esc(k)}: {esc(d.name)}</h2>{config_block(d)}{body}</section>')
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>InfU report: {esc(root.name)}</title>'
            f"<style>{CSS}</style></head><body>{header(root, jobs)}{''.join(bodies)}</body></html>")
    path = root / "report.html"
    write_whole(path, page.encode("utf-8"))
    return path
