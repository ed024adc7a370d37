"""Caption hygiene: what every caption goes through before it is stored.

``clean_caption(text, prompt)`` returns ``(clean_text, None)`` or ``(None, reason)``:
- the prompt echo is cut (captioners often repeat their instruction or prefix);
- control characters and undecodable bytes (U+FFFD) go;
- boilerplate openings go ("the image shows", "this is a picture of", "in this
  photo, ..."), whitespace collapses, the first letter is capitalised;
- real people are never named: a run of two or more capitalised words that is
  not at the start of a sentence and not a known common word (``Red Cross``,
  weekdays...) is taken for a name and replaced by "a person", as is any name
  in a configured list (e.g. the dataset's identity names);
- ``too_long`` is avoided by cutting at the last sentence end (or word) under
  ``max_chars``;
- ``empty_caption`` when nothing is left; ``degenerate_caption`` for repetition
  loops (a word or phrase repeated over and over, or too few distinct words).
"""
from __future__ import annotations

import re
import unicodedata

BOILERPLATE = re.compile(
    r"^(?:(?:in|on)\s+)?(?:the|this|an?)\s+(?:image|picture|photo(?:graph)?|scene)\s+"
    r"(?:shows|depicts|features|displays|contains|captures|presents|is(?:\s+of)?)\s*[:,]?\s*"
    r"|^(?:this|it)\s+is\s+(?:an?\s+)?(?:image|picture|photo(?:graph)?)\s+of\s+"
    r"|^(?:an?\s+)?(?:image|picture|photo(?:graph)?)\s+of\s+(?=an?\s|the\s|two\s|three\s)"
    r"|^in\s+(?:the|this)\s+(?:image|picture|photo(?:graph)?)\s*,\s*"
    r"|^(?:sure|certainly|here\s+is\s+(?:a|the)\s+description)[^.:]*[.:]\s*",
    re.IGNORECASE)
COMMON_CAPITALISED = {
    "I", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March",
    "April", "May", "June", "July", "August", "September", "October", "November", "December", "Christmas", "Halloween",
    "Red", "Cross", "New", "Year", "Asian", "African", "European", "American", "Caucasian", "Hispanic", "Indian",
    "Middle", "Eastern", "Latino", "Latina", "English", "French", "Chinese", "Japanese", "Korean", "T", "US", "UK",
}
NAME_RUN = re.compile(r"\b([A-Z][a-z'’\-]+(?:\s+(?:[A-Z]\.|[A-Z][a-z'’\-]+)){1,3})\b")


def strip_prompt_echo(text: str, prompt: str | None) -> str:
    if prompt:
        p = prompt.strip()
        t = text.lstrip()
        if t.lower().startswith(p.lower()):
            return t[len(p):].lstrip(" :,-\n")
        # chat templates: everything up to a role marker
        m = re.search(r"(?:assistant|ASSISTANT)\s*[:\n]\s*", t)
        if m and p.lower()[:20] in t[:m.start()].lower():
            return t[m.end():]
    return text


def anonymise(text: str, names: set[str] | frozenset = frozenset()) -> str:
    for name in sorted(names, key=len, reverse=True):
        if name:
            text = re.sub(rf"\b{re.escape(name)}\b", "a person", text, flags=re.IGNORECASE)

    def repl(m: re.Match) -> str:
        words = m.group(1).split()
        if all(w.rstrip(".") in COMMON_CAPITALISED for w in words):
            return m.group(1)
        start = m.start()
        before = text[:start].rstrip()
        at_sentence_start = not before or before[-1] in ".!?"
        if at_sentence_start and len(words) == 2 and words[1].rstrip(".") in COMMON_CAPITALISED:
            return m.group(1)
        return "a person"

    return NAME_RUN.sub(repl, text)


def is_degenerate(text: str) -> bool:
    words = re.findall(r"[\w'’]+", text.lower())
    if len(words) < 3:
        return False
    if re.search(r"\b(\w+)(?:\W+\1\b){3,}", text.lower()):  # the same word 4+ times in a row
        return True
    if re.search(r"(.)\1{5,}", text):  # a character stuck in a loop: "offffffff", "!!!!!!"
        return True
    for n in (2, 3, 4):
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        if len(grams) >= 4 and max(grams.count(g) for g in set(grams)) >= 3 and len(set(grams)) / len(grams) < 0.5:
            return True
    return len(words) >= 12 and len(set(words)) / len(words) < 0.3


def bound_length(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if end >= max_chars // 3:
        return cut[:end + 1]
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + "."


def clean_caption(text: str | None, prompt: str | None = None, max_chars: int = 400,
                  names: set[str] | frozenset = frozenset()) -> tuple[str | None, str | None]:
    if text is None:
        return None, "empty_caption"
    t = strip_prompt_echo(str(text), prompt)
    t = re.sub(r"\s+", " ", t)
    t = "".join(c for c in t if c != "\ufffd" and unicodedata.category(c)[0] != "C")  # bytes cut mid-character
    t = re.sub(r" {2,}", " ", t).strip().strip('"“”').strip()
    for _ in range(2):
        t = BOILERPLATE.sub("", t).strip()
    if not re.search(r"[A-Za-z]", t):
        return None, "empty_caption"
    if is_degenerate(t):
        return None, "degenerate_caption"
    t = anonymise(t, names)
    t = bound_length(t, max_chars)
    t = t[0].upper() + t[1:]
    return t, None
