"""Prompt banks with gender tags, and the pairing of prompts with identities.

A bank is YAML (``prompts: [{id, text, gender, tags}]``, as in configs/prompts/),
JSON Lines with the same keys, or plain text: one prompt per line, optionally
``female|male|any<TAB>prompt``. ``gender`` is female, male or any; a gendered
prompt is only ever given to an identity of that gender, and an identity whose
gender is unknown only gets ``any`` prompts.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

GENDERS = ("female", "male", "any")
_WORDS = {"female": r"\b(woman|women|girl|she|her|lady|mother|bride)\b",
          "male": r"\b(man|men|boy|he|his|him|gentleman|father|groom)\b"}


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    gender: str = "any"
    tags: dict = field(default_factory=dict, compare=False, hash=False)


class PromptBankError(ValueError):
    """The prompt file is malformed (the message names the entry)."""


def load_prompts(path: str | Path) -> list[Prompt]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PromptBankError(f"{path}: not a UTF-8 text file") from None
    if path.suffix in (".yaml", ".yml"):
        entries = _yaml_entries(text, path)
    elif path.suffix == ".jsonl":
        entries = [_json_line(ln, i, path) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    else:
        entries = [_text_line(ln) for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    prompts = [_entry(e, i, path) for i, e in enumerate(entries)]
    check_bank(prompts, path)
    return prompts


def _yaml_entries(text: str, path: Path) -> list:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise PromptBankError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML "
                              f"({getattr(e, 'problem', None) or e})") from None
    entries = (data or {}).get("prompts", []) if isinstance(data, dict) or data is None else None
    if not isinstance(entries, list):
        raise PromptBankError(f"{path}: expected 'prompts: [{{id, text, gender, tags}}, ...]' at the top level")
    return entries


def _json_line(line: str, i: int, path: Path) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptBankError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None


def _text_line(line: str) -> dict:
    head, sep, rest = line.partition("\t")
    if sep and head.strip().lower() in GENDERS:
        return {"gender": head.strip().lower(), "text": rest}
    return {"text": line}


def _entry(e, i: int, path: Path) -> Prompt:
    if not isinstance(e, dict) or not str(e.get("text", "")).strip():
        raise PromptBankError(f"{path}: entry {i} has no text")
    text = " ".join(str(e["text"]).split())
    gender = str(e.get("gender") or "any").lower()
    if gender not in GENDERS:
        raise PromptBankError(f"{path}: entry {i} ({text[:40]!r}) has gender {gender!r}; use one of {GENDERS}")
    pid = str(e.get("id") or hashlib.sha1(text.encode()).hexdigest()[:10])
    return Prompt(pid, text, gender, dict(e.get("tags") or {}))


def check_bank(prompts: list[Prompt], where="prompts") -> None:
    """No empty bank, no duplicate ids or texts, and no prompt whose words contradict its gender tag."""
    if not prompts:
        raise PromptBankError(f"{where}: no prompts")
    for attr in ("id", "text"):
        seen = set()
        for p in prompts:
            key = getattr(p, attr).lower() if attr == "text" else p.id
            if key in seen:
                raise PromptBankError(f"{where}: duplicate prompt {attr} {getattr(p, attr)!r}")
            seen.add(key)
    for p in prompts:
        for g, pattern in _WORDS.items():
            word = re.search(pattern, p.text, re.I)
            if word and p.gender != g:
                raise PromptBankError(f"{where}: prompt {p.id} is tagged {p.gender!r} but says {word.group(0)!r}")


def normalise_gender(value) -> str | None:
    """A dataset's label as female / male, or None when it says neither."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("female", "f", "woman", "w", "0"):
        return "female"
    if v in ("male", "m", "man", "1"):
        return "male"
    return None


def fitting(prompts: list[Prompt], gender: str | None) -> list[Prompt]:
    return [p for p in prompts if p.gender == "any" or (gender is not None and p.gender == gender)]


def choose(prompts: list[Prompt], gender: str | None, k: int | None, key: str, seed: int = 0) -> list[Prompt]:
    """``k`` prompts (all when None) that fit ``gender``, drawn without replacement by a
    generator seeded from ``key`` (the source id): the same source always gets the same ones."""
    pool = fitting(prompts, gender)
    if k is None or k >= len(pool):
        return pool
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{seed}\x00{key}".encode()).digest()[:8], "big"))
    return rng.sample(pool, k)
