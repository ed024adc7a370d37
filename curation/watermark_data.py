"""Examples for the watermark classifier we ship (``infu://watermark-classifier``), made from photos,
fonts and logos that ship inside installed packages; nothing is downloaded.

A *marked* example is a photo with an overlay as stock sites, agencies and photographers add them:
words and URLs in many fonts, sizes, colours, opacities (0.15 to 0.75), outlines and rotations,
tiled, across the face, centred, in a corner, in a lower third or a top band, and logos and simple
shapes (a (c) badge, a framed name). A *clean* example is the photo alone or with things that look
like text or marks but belong to the photo: a shop sign, a T-shirt print, a caption strip printed
with the picture, a poster or page in the scene, jewellery, patterned clothes.

Every example draws its photo, font, words and logo from one *split*: ``train`` or ``holdout``.
The holdout split's photos, fonts, words and logo are never seen in training, so its figures say
how the classifier does on marks it was not tuned on. ``examples(split, n, seed)`` is deterministic.
"""
from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from curation import samples

SPLITS = ("train", "holdout")

FONT_FILES = {
    "train": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
              "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf",
              "STIXGeneralBol.ttf", "cmr10.ttf", "cmtt10.ttf"),
    "holdout": ("DejaVuSerif-Bold.ttf", "DejaVuSans-BoldOblique.ttf", "STIXGeneralItalic.ttf", "cmss10.ttf",
                "cmb10.ttf"),
}

MARK_WORDS = {
    "train": ("Shutterstock", "Getty Images", "iStock", "alamy", "Dreamstime", "depositphotos", "PREVIEW",
              "SAMPLE", "www.johnsmithphoto.com", "© Maria Lopez", "© 2024 Studio Nine", "lightbox.net",
              "PROOF", "photo by K. Tanaka", "FOTOLIA", "stock.io", "Do not copy", "© Lens&Light",
              "ALL RIGHTS RESERVED", "pixelmarket.org", "Olsen Photography", "COMP", "watermark"),
    "holdout": ("123RF", "Adobe Stock", "bigstock", "www.annakimphoto.com", "© John Smith 2023", "pond5",
                "Anna Kim Photography", "DRAFT", "© imagebank.com", "NOT FOR SALE"),
}

SCENE_WORDS = {
    "train": ("CAFE", "EXIT", "Main St", "BAKERY", "OPEN", "SALE 50%", "PHARMACY", "Route 66", "BUS STOP",
              "PIZZA", "WELCOME", "No Smoking", "SUMMER", "NYC", "TEAM 7", "RUN CLUB", "LOVE", "1984"),
    "holdout": ("HOTEL", "NO PARKING", "BOOKS", "Station Rd", "BOSTON", "COLLEGE", "GYM", "2nd Ave"),
}


# ------------------------------------------------------------------------------------------- photos --
def _skimage(name: str) -> Image.Image:
    """A photo inside scikit-image's wheel (skimage/data/NAME, as its loaders read it)."""
    import skimage

    return Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB")


@lru_cache(maxsize=None)
def photos(split: str) -> tuple[Image.Image, ...]:
    """The photos a split draws from: portraits and group crops (the faces marks cross) and scenes
    without a face. Grace Hopper and the right half of the group photo are the holdout's."""
    g = samples.group()
    left, right = g.crop((0, 0, g.width // 2, g.height)), g.crop((g.width // 2, 0, g.width, g.height))
    if split == "train":
        a = samples.astronaut()
        return (a, a.crop((96, 0, 416, 400)), left, left.crop((0, 150, left.width, left.height)),
                Image.open(samples.aligned_face_path()).convert("RGB"), _skimage("chelsea.png"), _skimage("coffee.png"),
                _skimage("rocket.jpg"), _skimage("motorcycle_left.png"), _skimage("hubble_deep_field.jpg"),
                _skimage("camera.png"), _skimage("ihc.png"), _skimage("coins.png"), _skimage("gravel.png"),
                _skimage("clock_motion.png"))
    h = samples.grace_hopper()
    return (h, h.crop((40, 20, 470, 420)), right, right.crop((0, 100, right.width, right.height - 100)),
            _skimage("motorcycle_right.png"), _skimage("retina.jpg"), _skimage("moon.png"))


@lru_cache(maxsize=None)
def logos(split: str) -> tuple[Image.Image, ...]:
    """RGBA logos: scikit-image's for training, matplotlib's for the holdout."""
    import matplotlib

    if split == "train":
        import skimage

        return (Image.open(Path(skimage.__file__).parent / "data" / "logo.png").convert("RGBA"),)
    return (Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "logo2.png").convert("RGBA"),)


@lru_cache(maxsize=None)
def textures() -> tuple[Image.Image, ...]:
    """Greyscale textures for patterned clothes (both splits: they are negatives)."""
    return tuple(_skimage(n).convert("L") for n in ("brick.png", "grass.png", "gravel.png"))


def _font(split: str, rng: np.random.Generator, px: int) -> ImageFont.FreeTypeFont:
    return samples.font(FONT_FILES[split][rng.integers(len(FONT_FILES[split]))], px)


# --------------------------------------------------------------------------------------- the crop --
def _crop(rng: np.random.Generator, split: str, side: int) -> Image.Image:
    """A random crop of a split's photo (40-100 % of each side), flipped half the time, colour-jittered,
    scaled to a long side of ``side``."""
    ph = photos(split)
    im = ph[rng.integers(len(ph))]
    fw, fh = rng.uniform(0.55, 1.0, 2)
    w, h = max(16, int(im.width * fw)), max(16, int(im.height * fh))
    x, y = rng.integers(0, im.width - w + 1), rng.integers(0, im.height - h + 1)
    im = im.crop((x, y, x + w, y + h))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a = np.asarray(im, np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-25, 25)
    if rng.random() < 0.5:  # other colours than the few photos have
        a = a[..., rng.permutation(3)]
    if rng.random() < 0.15:
        a = np.repeat(a.mean(2, keepdims=True), 3, 2)
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return samples.fit(im, side)


# --------------------------------------------------------------------------------------- marks --
def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r = rng.random()
    if r < 0.45:
        return (255, 255, 255)
    if r < 0.7:
        v = int(rng.integers(90, 200))
        return (v, v, v)
    if r < 0.85:
        return (0, 0, 0)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _text_layer(size: tuple[int, int], text: str, font, fill, xy, *, stroke: int = 0, stroke_fill=None):
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(xy, text, font=font, fill=fill, stroke_width=stroke, stroke_fill=stroke_fill)
    return layer


def _mark_layer(rng: np.random.Generator, split: str, size: tuple[int, int]) -> tuple[Image.Image, str]:
    """An RGBA overlay the size of the photo, and what it is (``tiled``, ``face``, ``corner``, ...)."""
    w, h = size
    opacity = float(rng.uniform(0.15, 0.75))
    colour = _colour(rng)
    fill = (*colour, int(round(255 * opacity)))
    stroke = int(rng.integers(1, 3)) if rng.random() < 0.2 else 0
    stroke_fill = (*(255 - c for c in colour), int(round(255 * opacity))) if stroke else None
    kind = rng.choice(["tiled", "face", "centre", "corner", "lower_third", "top", "diagonal", "logo", "badge"],
                      p=[0.18, 0.16, 0.1, 0.14, 0.1, 0.06, 0.08, 0.1, 0.08])
    text = MARK_WORDS[split][rng.integers(len(MARK_WORDS[split]))]
    if kind == "logo":
        return _logo_layer(rng, split, size, opacity), "logo"
    if kind == "badge":
        return _badge_layer(rng, split, size, fill), "badge"
    if kind in ("tiled", "diagonal"):
        px = int(w * (rng.uniform(0.03, 0.07) if kind == "tiled" else rng.uniform(0.08, 0.16)))
        f = _font(split, rng, px)
        side = int(1.5 * max(w, h))
        layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        tw = int(d.textlength(text + "    ", font=f)) + 1
        if kind == "tiled":
            step = int(rng.uniform(2.5, 5.0) * f.size)
            for row, y in enumerate(range(0, side, step)):
                for x in range(-tw * (row % 2) // 2, side, tw):
                    d.text((x, y), text, font=f, fill=fill, stroke_width=stroke, stroke_fill=stroke_fill)
        else:
            d.text(((side - tw) // 2, (side - f.size) // 2), text, font=f, fill=fill, stroke_width=stroke,
                   stroke_fill=stroke_fill)
        angle = float(rng.choice([0.0, rng.uniform(-50, 50)]))
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC)
        left, top = (side - w) // 2, (side - h) // 2
        return layer.crop((left, top, left + w, top + h)), str(kind)
    scale = {"face": (0.06, 0.14), "centre": (0.05, 0.12), "corner": (0.025, 0.06), "lower_third": (0.04, 0.08),
             "top": (0.03, 0.06)}[kind]
    f = _font(split, rng, int(w * rng.uniform(*scale)))
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=f)
    tw, th = x1 - x0, y1 - y0
    m = int(w * rng.uniform(0.01, 0.05))
    if kind in ("face", "centre"):  # across the middle (portraits: the face sits there or above)
        cy = h * (rng.uniform(0.25, 0.45) if kind == "face" else rng.uniform(0.45, 0.6))
        xy = (int((w - tw) / 2 + rng.uniform(-0.1, 0.1) * w), int(cy - th / 2))
    elif kind == "corner":
        xy = (int(rng.choice([m, w - tw - m])), int(rng.choice([m, h - th - m - y0])))
    elif kind == "lower_third":
        xy = (int((w - tw) / 2), int(h * rng.uniform(0.66, 0.85)))
    else:
        xy = (int((w - tw) / 2), m)
    return _text_layer(size, text, f, fill, xy, stroke=stroke, stroke_fill=stroke_fill), str(kind)


def _logo_layer(rng: np.random.Generator, split: str, size: tuple[int, int], opacity: float) -> Image.Image:
    w, h = size
    logo = logos(split)[rng.integers(len(logos(split)))]
    s = rng.uniform(0.2, 0.5) * w / logo.width
    logo = logo.resize((max(1, int(logo.width * s)), max(1, int(logo.height * s))), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:  # a single-colour mark, as most are
        alpha = logo.getchannel("A")
        logo = Image.new("RGBA", logo.size, (*_colour(rng), 255))
        logo.putalpha(alpha)
    a = np.asarray(logo.getchannel("A"), np.float32) * opacity
    logo.putalpha(Image.fromarray(a.astype(np.uint8)))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    x = int(rng.uniform(0, max(1, w - logo.width)))
    y = int(rng.uniform(0, max(1, h - logo.height)))
    layer.paste(logo, (x, y), logo)
    return layer


def _badge_layer(rng: np.random.Generator, split: str, size: tuple[int, int], fill) -> Image.Image:
    """A (c) in a circle, or a name in a frame, drawn in outline."""
    w, h = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    r = int(w * rng.uniform(0.05, 0.15))
    cx, cy = int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r))
    line = max(1, r // 8)
    if rng.random() < 0.5:
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=line)
        f = _font(split, rng, int(1.3 * r))
        d.text((cx, cy), "©" if rng.random() < 0.5 else "C", font=f, fill=fill, anchor="mm")
    else:
        text = MARK_WORDS[split][rng.integers(len(MARK_WORDS[split]))]
        f = _font(split, rng, max(8, r // 2))
        x0, y0, x1, y1 = d.textbbox((cx, cy), text, font=f, anchor="mm")
        pad = f.size // 2
        d.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), outline=fill, width=line)
        d.text((cx, cy), text, font=f, fill=fill, anchor="mm")
    return layer


def marked(rng: np.random.Generator, split: str, im: Image.Image) -> tuple[Image.Image, np.ndarray, str]:
    """``im`` with one overlay (sometimes two: a logo beside a name); returns it, the overlay's alpha
    (HxW float, 0..1: where the mark is) and its kind."""
    layer, kind = _mark_layer(rng, split, im.size)
    out = Image.alpha_composite(im.convert("RGBA"), layer)
    alpha = np.asarray(layer.getchannel("A"), np.float32) / 255
    if rng.random() < 0.15:
        second = _mark_layer(rng, split, im.size)[0]
        out = Image.alpha_composite(out, second)
        alpha = np.maximum(alpha, np.asarray(second.getchannel("A"), np.float32) / 255)
    return out.convert("RGB"), alpha, kind


# ---------------------------------------------------------------------- things that belong to the photo --
def belonging(rng: np.random.Generator, split: str, im: Image.Image) -> tuple[Image.Image, str]:
    """``im`` with something that is not a watermark; returns it and its kind."""
    kind = str(rng.choice(["clean", "sign", "shirt", "caption", "poster", "jewellery", "pattern"],
                          p=[0.3, 0.14, 0.14, 0.1, 0.1, 0.1, 0.12]))
    out = im.convert("RGB").copy()
    if kind == "clean":
        return out, kind
    w, h = out.size
    d = ImageDraw.Draw(out)
    words = SCENE_WORDS[split]
    text = words[rng.integers(len(words))]
    if kind == "sign":  # opaque letters on a plate, anywhere off the middle
        f = _font(split, rng, int(w * rng.uniform(0.04, 0.09)))
        x0, y0, x1, y1 = d.textbbox((0, 0), text, font=f)
        pad = f.size // 3
        left = int(rng.choice([w // 40, w - (x1 - x0) - 3 * pad - w // 40]))
        top = int(rng.uniform(0.02, 0.8) * h)
        plate = tuple(int(v) for v in rng.integers(0, 256, 3))
        ink = tuple(255 - v for v in plate)
        d.rectangle((left, top, left + x1 - x0 + 2 * pad, top + y1 + 2 * pad), fill=plate)
        d.text((left + pad, top + pad), text, font=f, fill=ink)
    elif kind == "shirt":  # opaque print below the face, shaded like the cloth under it
        f = _font(split, rng, int(w * rng.uniform(0.05, 0.1)))
        x0, y0, x1, y1 = d.textbbox((0, 0), text, font=f)
        mask = Image.new("L", out.size, 0)
        ImageDraw.Draw(mask).text(((w - (x1 - x0)) // 2, int(h * rng.uniform(0.7, 0.85))), text, font=f, fill=255)
        ink = Image.new("RGB", out.size, tuple(int(v) for v in rng.integers(0, 256, 3)))
        shade = np.asarray(out.convert("L"), np.float32) / 255.0
        ink = Image.fromarray((np.asarray(ink, np.float32) * (0.5 + 0.5 * shade[..., None])).astype(np.uint8))
        out.paste(ink, (0, 0), mask)
    elif kind == "caption":  # a strip printed with the picture, at the top or bottom edge
        f = _font(split, rng, int(w * rng.uniform(0.03, 0.05)))
        bar = int(1.8 * f.size)
        top = 0 if rng.random() < 0.3 else h - bar
        bg = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
        d.rectangle((0, top, w, top + bar), fill=bg)
        d.text((w // 30, top + bar // 5), f"{text}, {int(rng.integers(1950, 2025))}", font=f,
               fill=tuple(255 - v for v in bg))
    elif kind == "poster":  # a printed page or sign photographed in the scene
        page = _skimage("page.png" if rng.random() < 0.5 else "text.png")
        s = rng.uniform(0.2, 0.4) * w / page.width
        page = page.resize((max(1, int(page.width * s)), max(1, int(page.height * s))))
        page = page.rotate(float(rng.uniform(-8, 8)), expand=True, fillcolor=(90, 80, 70))
        out.paste(page, (int(rng.choice([0, w - page.width])), int(rng.uniform(0, max(1, h - page.height)))))
    elif kind == "jewellery":  # a necklace of beads, a pendant
        cx, cy, rx = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.45, 0.7), w * rng.uniform(0.08, 0.18)
        metal = (int(rng.integers(170, 256)), int(rng.integers(140, 220)), int(rng.integers(40, 200)))
        bead = max(1, int(w * rng.uniform(0.004, 0.012)))
        for t in np.linspace(0.1 * math.pi, 0.9 * math.pi, int(rng.integers(12, 40))):
            x, y = cx + rx * math.cos(t), cy + 0.6 * rx * math.sin(t)
            d.ellipse((x - bead, y - bead, x + bead, y + bead), fill=metal, outline=(60, 50, 30))
        py = cy + 0.6 * rx
        d.ellipse((cx - 3 * bead, py, cx + 3 * bead, py + 6 * bead), fill=metal)
    else:  # patterned cloth over the lower part, shaded like what it covers
        tex = textures()[rng.integers(len(textures()))]
        top = int(h * rng.uniform(0.55, 0.8))
        region = (0, top, w, h)
        if rng.random() < 0.5:  # stripes or checks instead of a photographed texture
            period = max(3, int(w * rng.uniform(0.015, 0.05)))
            yy, xx = np.mgrid[0:h - top, 0:w]
            pat = ((yy // period) % 2) if rng.random() < 0.5 else (((yy // period) + (xx // period)) % 2)
            pat = Image.fromarray((pat * 255).astype(np.uint8))
        else:
            pat = tex.resize((w, h - top))
        c1, c2 = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
        cloth = Image.composite(Image.new("RGB", pat.size, c1), Image.new("RGB", pat.size, c2), pat)
        shade = np.asarray(out.crop(region).convert("L"), np.float32) / 255.0
        cloth = np.asarray(cloth, np.float32) * (0.4 + 0.6 * shade[..., None])
        out.paste(Image.fromarray(cloth.astype(np.uint8)), region[:2])
    return out, kind


# --------------------------------------------------------------------------------------- examples --
def _finish(rng: np.random.Generator, im: Image.Image) -> Image.Image:
    """What happens to photos on the way: a slight blur, noise, a JPEG round trip."""
    if rng.random() < 0.2:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    if rng.random() < 0.2:
        a = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(2, 6), (im.height, im.width, 3))
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        im = Image.open(io.BytesIO(samples.jpeg_bytes(im, int(rng.integers(55, 96))))).convert("RGB")
    return im


def pair(rng: np.random.Generator, split: str, side: int) -> list[dict]:
    """One crop twice: with a mark (label 1) and with something that belongs to the photo (label 0),
    so what tells them apart is the mark, not the photo. ``change``: how much the mark changed each
    pixel (HxW, 0..1; zero on the clean one, whatever text or pattern it holds): a mark drawn where it
    cannot be seen (white on white) is no mark to learn."""
    im = _crop(rng, split, side)
    pos, alpha, pos_kind = marked(rng, split, im)
    change = np.abs(np.asarray(pos, np.float32) - np.asarray(im, np.float32)).max(2) / 255
    neg, neg_kind = belonging(rng, split, im)
    return [{"image": _finish(rng, pos), "change": change, "label": 1, "kind": pos_kind},
            {"image": _finish(rng, neg), "change": np.zeros_like(change), "label": 0, "kind": neg_kind}]


def examples(split: str, n: int, seed: int, side: tuple[int, int] = (320, 1024)) -> list[dict]:
    """``n`` examples (half marked) of ``split``; each photo at a random long side in ``side``."""
    if split not in SPLITS:
        raise ValueError(f"split is one of {SPLITS}, not {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    out: list[dict] = []
    while len(out) < n:
        out += pair(rng, split, int(rng.integers(side[0], side[1] + 1)))
    return out[:n]
