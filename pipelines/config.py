"""A job's whole config, typed: one frozen dataclass per job (``CurateConfig``, ``SynthConfig``, ...),
parsed once, from the packaged YAML (``configs/<job>.yaml``: every default, documented, the paper's
values) with the user's file and overrides laid over it, and passed down as that object.

The declaration is the check: an unknown key (with a did-you-mean), a wrong kind, a value out of
range or not among the choices is a ``ConfigError`` naming the file and the key path, before any
work. Named blocks (a curate config's ``stages``, a caption config's ``captioners``) replace the
default list whole, each block laid over the default block of its stage.

The fingerprint covers what changes a job's *output*; ``ray`` settings and every ``resources``
block are left out, so a resumed run may use a different pool size.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from curation.options import (  # noqa: F401 - the jobs' config API
    CONFIG_DIR, ConfigError, between, merge, named_block, packaged, parse, plain, read_yaml, unknown_keys)

_NOT_OUTPUT = {"ray", "resources", "progress"}


class JobConfig:
    """Base of the jobs' typed configs (frozen dataclasses); the job table (pipelines/jobs.py) names
    each one's packaged YAML files."""

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


def load_config(name: str, path: str | Path | None = None, overrides: dict | None = None, where: str | None = None):
    """The typed config of the job whose defaults are ``configs/<name>.yaml``: those defaults, then the
    user's file ``path`` (checked as part of the whole), then ``overrides`` (command-line options).
    Errors name ``where`` (default: the user's file, else the packaged one) and the key path."""
    from pipelines.jobs import config_class

    data = packaged(name)
    where = where or (str(path) if path is not None else f"configs/{name}.yaml")
    if path is not None:
        data = merge(data, own_file(name, read_yaml(Path(path)), where))
    return config_class(name).parse(merge(data, overrides or {}), where)


def own_file(name: str, data: dict, where: str) -> dict:
    """A user's file for the job whose defaults are ``configs/<name>.yaml``. A copy of a packaged file may
    keep its ``extends:`` line, which must name what those defaults already extend."""
    base = data.pop("extends", None)
    if base is not None and base != read_yaml(CONFIG_DIR / f"{name}.yaml").get("extends"):
        raise ConfigError(f"{where}: extends: {base!r}: a {name} config builds on configs/{name}.yaml; "
                          "leave the line out")
    return data


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in sorted(obj.items()) if k not in _NOT_OUTPUT}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    return obj


def fingerprint(*parts) -> str:
    blob = json.dumps([_strip(plain(p)) for p in parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def packaged_path(path: str | Path) -> Path:
    """``path`` as given, or, when it is relative and missing here, the same path inside the
    project (the defaults name files like configs/prompts/synth.yaml)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    inside = CONFIG_DIR.parent / p
    return inside if inside.exists() else p
