"""YAML configs: packaged defaults, a user file merged over them, a fingerprint.

The fingerprint covers what changes a job's *output*; ``ray`` settings and every
``resources`` block are left out, so a resumed run may use a different pool size.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
_NOT_OUTPUT = {"ray", "resources", "progress"}


def load_config(name: str, path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults from ``configs/<name>.yaml``, then ``path`` (if given), then ``overrides``."""
    cfg = _read(CONFIG_DIR / f"{name}.yaml")
    if path is not None:
        cfg = merge(cfg, _read(Path(path)))
    return merge(cfg, overrides or {})


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return data


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in sorted(obj.items()) if k not in _NOT_OUTPUT}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    return obj


def fingerprint(*parts) -> str:
    blob = json.dumps([_strip(p) for p in parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def packaged_path(path: str | Path) -> Path:
    """``path`` as given, or, when it is relative and missing here, the same path inside the
    project (the defaults name files like configs/prompts/synth.yaml)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    inside = CONFIG_DIR.parent / p
    return inside if inside.exists() else p
