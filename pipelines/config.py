"""YAML configs: packaged defaults, a user file merged over them, a fingerprint.

The fingerprint covers what changes a job's *output*; ``ray`` settings and every
``resources`` block are left out, so a resumed run may use a different pool size.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from curation.options import (  # noqa: F401 - ConfigError, merge: the jobs' config API
    CONFIG_DIR, ConfigError, is_number, merge, packaged, read_yaml, unknown_keys)

_NOT_OUTPUT = {"ray", "resources", "progress"}


def load_config(name: str, path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults from ``configs/<name>.yaml``, then ``path`` (if given; every key it sets must exist
    in the defaults), then ``overrides``."""
    cfg = packaged(name)
    if path is not None:
        user = read_yaml(Path(path))
        check_keys(cfg, user, str(path))
        cfg = merge(cfg, user)
    return merge(cfg, overrides or {})


def check_keys(defaults: dict, given: dict, where: str, error=ConfigError, named: bool = False) -> None:
    """Every key of ``given`` must exist in ``defaults`` (recursively): a typo is an error, not a
    silently ignored setting; and its value must be of the default's kind (a number, text, true or
    false, a mapping, a list; a null default takes anything). A list of named blocks (``stages:
    [{name: faces, ...}]``) is checked block by block against the default block of the same name;
    other lists, empty default dicts and a backend's block (a dict with a ``backend`` key: its
    options depend on the backend chosen) take any keys; a named block lists every backend's
    options, so it is checked whole."""
    if "backend" in defaults and not named:
        return
    unknown_keys(given, list(defaults), where, error)
    for k, v in given.items():
        d = defaults.get(k)
        kind = _kind(d)
        if kind and v is not None and _kind(v) != kind:
            raise error(f"{_inside(where, k)}: expected {kind} like the default {d!r}, got {v!r}"
                        + (" (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(v, str) and is_number(v) else ""))
        if isinstance(v, dict) and isinstance(d, dict) and d:
            check_keys(d, v, _inside(where, k), error)
        elif isinstance(v, list) and isinstance(d, list):
            by_name = {b["name"]: b for b in d if isinstance(b, dict) and "name" in b}
            for i, block in enumerate(v):
                if isinstance(block, dict) and block.get("name") in by_name:
                    check_keys(by_name[block["name"]], block, _inside(where, f"{k}[{i}] ({block['name']})"), error, True)


def _kind(x) -> str | None:
    """What a default's value is, for the type check (None: anything goes, e.g. a null default)."""
    if isinstance(x, bool):
        return "true or false"
    if isinstance(x, (int, float)):
        return "a number"
    return {str: "text", dict: "a mapping", list: "a list"}.get(type(x))


def _inside(where: str, key: str) -> str:
    """``file: a.b`` for a key path inside a file."""
    return f"{where}.{key}" if ":" in where else f"{where}: {key}"


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
