"""CelebA (Liu et al., ICCV 2015).

Layout (as distributed): images in ``img_celeba/`` (in the wild, preferred: larger
and uncropped) or ``img_align_celeba/``; annotations in ``Anno/`` (or the root):
``identity_CelebA.txt`` (``000001.jpg 2880`` per line) and
``list_attr_celeba.txt`` (a count line, a line of the 40 attribute names, then
``000001.jpg -1 1 ...``). Both annotation files are sorted by file name, like
the image folder, so they are merge-joined while streaming. The 40 attributes
become one sentence (source ``dataset``); ``Male`` fills ``gender``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Literal

from curation.sources.base import Source

# attribute -> phrase; grouped by where it goes in the sentence
_HAIR = {"Bald": "a bald head", "Black_Hair": "black hair", "Blond_Hair": "blond hair",
         "Brown_Hair": "brown hair", "Gray_Hair": "grey hair"}
_HAIR_SHAPE = {"Straight_Hair": "straight", "Wavy_Hair": "wavy", "Bangs": None, "Receding_Hairline": None}
_FACE = {"Arched_Eyebrows": "arched eyebrows", "Bushy_Eyebrows": "bushy eyebrows", "Bags_Under_Eyes": "bags under the eyes",
         "Big_Lips": "full lips", "Big_Nose": "a big nose", "Pointy_Nose": "a pointy nose", "Narrow_Eyes": "narrow eyes",
         "High_Cheekbones": "high cheekbones", "Rosy_Cheeks": "rosy cheeks", "Oval_Face": "an oval face",
         "Double_Chin": "a double chin", "Bangs": "bangs", "Receding_Hairline": "a receding hairline",
         "Mustache": "a mustache", "Goatee": "a goatee", "Sideburns": "sideburns", "5_o_Clock_Shadow": "stubble",
         "Pale_Skin": "pale skin", "Heavy_Makeup": "heavy makeup", "Mouth_Slightly_Open": "a slightly open mouth"}
_WEARING = {"Eyeglasses": "eyeglasses", "Wearing_Earrings": "earrings", "Wearing_Hat": "a hat",
            "Wearing_Lipstick": "lipstick", "Wearing_Necklace": "a necklace", "Wearing_Necktie": "a necktie"}


def attributes_sentence(attrs: dict[str, bool]) -> str:
    """CelebA's 40 binary attributes as one natural sentence."""
    on = {k for k, v in attrs.items() if v}
    person = "man" if "Male" in on else "woman"
    adj = [w for k, w in (("Attractive", "attractive"), ("Chubby", "chubby"), ("Young", "young")) if k in on]
    if "Smiling" in on:
        adj.insert(0, "smiling")
    if "No_Beard" not in on and "Male" in on and not on & {"Goatee", "Mustache"}:
        adj.append("bearded")
    head = f"A photo of a{'n' if (adj[0] if adj else person)[0] in 'aeiou' else ''} {' '.join(adj + [person])}"
    hair = [_HAIR[k] for k in _HAIR if k in on]
    shape = [_HAIR_SHAPE[k] for k in ("Straight_Hair", "Wavy_Hair") if k in on]
    feats = []
    if hair and hair[0] != "a bald head":
        feats.append(" ".join(shape + [hair[0]]))
    elif hair:
        feats.append(hair[0])
    elif shape:
        feats.append(f"{shape[0]} hair")
    feats += [p for k, p in _FACE.items() if k in on]
    wear = [p for k, p in _WEARING.items() if k in on]
    out = head
    if feats:
        out += " with " + _join(feats)
    if wear:
        out += ", wearing " + _join(wear)
    if "Blurry" in on:
        out += ", slightly blurry"
    return out + "."


def _join(xs: list[str]) -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


@dataclass(frozen=True)
class CelebAOptions:
    images: Literal["auto", "img_celeba", "img_align_celeba"]   # auto: in the wild when present, else aligned


class CelebASource(Source):
    kind = "celeba"
    Options = CelebAOptions

    def items(self):
        images = self._image_dir()
        ids = self._lines(self.find("Anno/identity_CelebA.txt", "identity_CelebA.txt"))
        attr_path = self.find("Anno/list_attr_celeba.txt", "list_attr_celeba.txt")
        attrs = self._attr_lines(attr_path)
        id_cur, attr_cur = next(ids, None), next(attrs, None)
        for rel in self.walk_files(images):
            name = os.path.basename(rel)
            while id_cur is not None and id_cur[0] < name:
                id_cur = next(ids, None)
            while attr_cur is not None and attr_cur[0] < name:
                attr_cur = next(attrs, None)
            ident = id_cur[1][0] if id_cur and id_cur[0] == name and id_cur[1] else None
            a = attr_cur[1] if attr_cur and attr_cur[0] == name else None
            yield self.row(rel, identity=ident,
                           gender=(("male" if a["Male"] else "female") if a and "Male" in a else None),
                           captions=[attributes_sentence(a)] if a else None)

    def _image_dir(self):
        want = self.opts.images
        names = ["img_celeba", "img_align_celeba"] if want == "auto" else [want]
        for n in names:
            if (self.root / n).is_dir():
                return self.root / n
        return self.root

    def _lines(self, path) -> Iterator[tuple[str, list[str]]]:
        if path is None:
            return iter(())
        return ((p[0], p[1:]) for p in (ln.split() for ln in path.open(encoding="utf-8", errors="replace")) if p)

    def _attr_lines(self, path) -> Iterator[tuple[str, dict[str, bool]]]:
        if path is None:
            return
        with path.open(encoding="utf-8", errors="replace") as f:
            next(f, None)  # the count
            names = next(f, "").split()
            for ln in f:
                p = ln.split()
                if len(p) == len(names) + 1:
                    yield p[0], {n: v == "1" for n, v in zip(names, p[1:])}
                elif p:
                    self.errors.append(f"{path.name}: malformed line for {p[0]}")
