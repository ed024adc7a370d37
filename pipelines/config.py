"""A job's whole config, typed: one frozen dataclass per job (``CurateConfig``, ``SynthConfig``, ...),
parsed once, from the packaged YAML (``configs/<job>.yaml``: every default, documented, the paper's
values) with the user's file and overrides laid over it, and passed down as that object.

The declaration is the check: an unknown key (with a did-you-mean), a wrong kind, a value out of
range or not among the choices is a ``ConfigError`` naming the file and the key path, before any
work. Named blocks (a curate config's ``stages``, a caption config's ``captioners``) replace the
default list whole, each block laid over the default block of its stage.

The fingerprint covers what changes a job's *output*; ``ray`` settings, every ``resources`` block,
``progress`` and the keys a config class lists in ``RESUMABLE`` (training's ``train.max_steps``,
say) are left out, so a resumed run may use a different pool size or train further.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

from curation.engine import ConfigError, parse, plain

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

_NOT_OUTPUT = {"ray", "resources", "progress"}


class JobConfig:
    """Base of the jobs' typed configs (frozen dataclasses); the job table (pipelines/jobs.py) names
    each one's packaged YAML files. ``RESUMABLE``: dotted keys that change how far or how fast a run
    goes, not what it makes, so a rerun may change them and still resume."""

    RESUMABLE: tuple[str, ...] = ()

    @classmethod
    def complete(cls, data: dict) -> dict:
        """``data`` with its named blocks laid over their defaults (the identity unless a job has them)."""
        return data

    @classmethod
    def parse(cls, data: dict, where: str):
        return parse(cls, cls.complete(data), where)

    def models(self) -> list[tuple[str, str, str]]:
        """(stage: model, device, runtime) of every model the job would load (``infu doctor``)."""
        return []

    def needs(self) -> list:
        """Every model the job loads, as ``infu_model.hub.Need`` (reference, the files read, purpose): the
        driver fetches them before any work (pipelines/models.py), ``infu models`` lists and pulls them."""
        return []

    def updated(self, over: dict):
        """This config with ``over`` laid over it, checked again."""
        return type(self).parse(merge(plain(self), over), f"{type(self).__name__} update")


def stage_models(stages) -> list[tuple[str, str, str]]:
    """Each stage's models, named ``stage: model``."""
    return [(m if m == s.label else f"{s.label}: {m}", device, runtime)
            for s in stages for m, device, runtime in s.models()]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in sorted(obj.items()) if k not in _NOT_OUTPUT}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    return obj


def fingerprint(*parts) -> str:
    blob = json.dumps([_strip(plain(p)) for p in parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def output_config(cfg) -> dict:
    """``cfg`` as plain values, without what a resumed run may change (``_NOT_OUTPUT`` anywhere, and
    its class's ``RESUMABLE`` keys)."""
    data = _strip(plain(cfg))
    for key in getattr(cfg, "RESUMABLE", ()):
        *parents, last = key.split(".")
        block = data
        for p in parents:
            block = block.get(p) if isinstance(block, dict) else None
        if isinstance(block, dict):
            block.pop(last, None)
    return data


def flat(data, prefix: str = "") -> dict:
    """Nested settings as {dotted key: value}; a list of named blocks (``stages``) by their names."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    if isinstance(data, list) and data and all(isinstance(b, dict) and "name" in b for b in data):
        return {k: v for b in data for k, v in flat({x: y for x, y in b.items() if x != "name"},
                                                    f"{prefix}{b['name']}.").items()}
    return {prefix.rstrip("."): json.loads(json.dumps(data, default=str))}


def packaged_path(path: str | Path) -> Path:
    """``path`` as given, or, when it is relative and missing here, the same path inside the
    project (the defaults name files like configs/prompts/synth.yaml)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    inside = CONFIG_DIR.parent / p
    return inside if inside.exists() else p


def read_yaml(path: Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping; a malformed one is a ConfigError naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, not {type(data).__name__}")
    return data


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def packaged(name: str) -> dict:
    """The packaged defaults ``configs/<name>.yaml`` (read once per process). A file that starts with
    ``extends: OTHER`` states only what differs from ``configs/OTHER.yaml`` and takes the rest from it."""
    if name not in _PACKAGED:
        data = read_yaml(CONFIG_DIR / f"{name}.yaml")
        base = data.pop("extends", None)
        _PACKAGED[name] = merge(packaged(base), data) if base else data
    return copy.deepcopy(_PACKAGED[name])


_PACKAGED: dict[str, dict] = {}


def named_block(blocks: list, key: str, value: str) -> dict:
    """The block of a list like ``stages:`` whose ``key`` is ``value`` ({} when none is)."""
    return next((dict(b) for b in blocks or [] if isinstance(b, dict) and b.get(key) == value), {})
