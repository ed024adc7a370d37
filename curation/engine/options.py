"""Typed stage options: each stage declares what its config block may hold, once.

A stage's ``Options`` is a frozen dataclass. A field's type gives the kind (``float``, ``int``,
``bool``, ``str``, ``ModelRef`` (a model: path, Hub id or URL), ``Literal[...]`` choices, ``X | None``, ``tuple[X, ...]``, a nested options
dataclass, ``dict`` for free-form blocks) and ``between(lo, hi)`` its range. The values
themselves live in one place, the packaged YAML (``configs/*.yaml``: documented, the paper's
values), which the jobs read (``pipelines/config.py``) and hand each stage its block of.
``parse`` refuses an unknown key (with a did-you-mean), a wrong kind, a value outside its range
or choices, naming the key path, before any work starts.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing

from infu_model.hub import ModelError, ModelRef


class ConfigError(ValueError):
    """A config names a key its stage or job does not have, or gives a value of the wrong kind or
    out of range (raised before any work starts)."""


def between(lo: float | None = None, hi: float | None = None, default=dataclasses.MISSING):
    """A field whose value (or each value, for a tuple) must lie in ``[lo, hi]``."""
    return dataclasses.field(default=default, metadata={"range": (lo, hi)})


def parse(cls, data: dict, where: str):
    """``data`` as an instance of the options dataclass ``cls``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown_keys(data, list(fields), where)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: {name} is missing")
            continue
        values[name] = _value(hints[name], data[name], inside(where, name), f.metadata.get("range"))
    return cls(**values)


def inside(where: str, key: str) -> str:
    """``file: a.b`` for a key path inside a file (``where`` without a colon is the file or block)."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _value(tp, v, where: str, bounds):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return _value(tp, v, where, bounds)
    if origin is typing.Literal:
        if v not in args:
            raise ConfigError(f"{where}: {v!r} is not one of {', '.join(map(repr, args))}")
        return v
    if origin is tuple:
        fixed = not (len(args) == 2 and args[1] is Ellipsis)
        if not isinstance(v, (list, tuple)) or (fixed and len(v) != len(args)):
            raise ConfigError(f"{where}: expected a list" + (f" of {len(args)} values" if fixed else "") + f", got {v!r}")
        kinds = args if fixed else [args[0]] * len(v)
        return tuple(_value(k, x, f"{where}[{i}]", bounds) for i, (k, x) in enumerate(zip(kinds, v)))
    if tp is ModelRef:  # a model by path, Hub id or URL (infu_model/hub.py), checked for its syntax here
        try:
            return ModelRef.parse(v)
        except ModelError as e:
            raise ConfigError(f"{where}: {e}") from None
    if hasattr(tp, "from_block"):  # a stage: its options block parsed, then built (once, here)
        return tp.from_block(v, where)
    if dataclasses.is_dataclass(tp):
        return parse(tp, v, where)
    if tp is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{where}: expected a mapping, got {v!r}")
        return v
    return _scalar(tp, v, where, bounds)


def _scalar(tp, v, where: str, bounds):
    ok = {bool: isinstance(v, bool), str: isinstance(v, str),
          int: isinstance(v, int) and not isinstance(v, bool),
          float: isinstance(v, (int, float)) and not isinstance(v, bool)}[tp]
    if not ok:
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if tp is float and isinstance(v, str) and is_number(v) else ""
        raise ConfigError(f"{where}: expected {_KIND[tp]}, got {v!r}{hint}")
    lo, hi = bounds or (None, None)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        span = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise ConfigError(f"{where}: {v!r} is out of range {span}")
    return v  # as written (an int where a float is asked is kept): plain() gives back the user's values


_KIND = {bool: "true or false", str: "text", int: "a whole number", float: "a number"}


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def unknown_keys(given: dict, allowed, where: str, error=ConfigError) -> None:
    for k in given:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise error(f"{where}: unknown key {k!r}{hint}; allowed: {', '.join(map(str, allowed))}")


def plain(obj):
    """A typed config (or any value inside one) as plain YAML values: dataclasses as mappings,
    tuples as lists, a built stage as its block."""
    if hasattr(obj, "block"):
        return obj.block()
    if isinstance(obj, ModelRef):
        return obj.text
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj
