"""Real photos that ship inside installed packages, and the hard cases derived
from them. The demo run and the tests both use these; nothing here is drawn.

- ``astronaut``: scikit-image ``data.astronaut()`` (Eileen Collins, one portrait)
- ``grace_hopper``: matplotlib's ``sample_data/grace_hopper.jpg`` (one portrait)
- ``group``: insightface's ``data/images/t1.jpg`` (six people)
- ``aligned_face``: insightface's ``Tom_Hanks_54745.png`` (112-px aligned face)
- ``cat``: scikit-image ``data.chelsea()`` (no human face)
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def _insightface_image(name: str) -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images" / name


def grace_hopper_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def group_path() -> Path:
    return _insightface_image("t1.jpg")


def aligned_face_path() -> Path:
    return _insightface_image("Tom_Hanks_54745.png")


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def grace_hopper() -> Image.Image:
    return Image.open(grace_hopper_path()).convert("RGB")


def group() -> Image.Image:
    return Image.open(group_path()).convert("RGB")


def cat() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea())


def jpeg_bytes(im: Image.Image, quality: int = 92, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def exif_rotated(im: Image.Image) -> bytes:
    """Pixels stored rotated 90 degrees with EXIF orientation 6, as phones write them."""
    stored = im.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(stored, exif=exif.tobytes())


def gray16(im: Image.Image) -> bytes:
    """A 16-bit greyscale PNG with the photo's full tonal range."""
    a = (np.asarray(im.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return png_bytes(Image.fromarray(a))  # uint16 -> mode I;16


def small_face_canvas(im: Image.Image, canvas: int = 1600, size: int = 512) -> Image.Image:
    """The portrait shrunk to ``size`` px and pasted into a large plain canvas."""
    out = Image.new("RGB", (canvas, canvas), (128, 140, 150))
    out.paste(im.resize((size, round(size * im.height / im.width))), (canvas // 2, canvas // 3))
    return out


def side_by_side(a: Image.Image, b: Image.Image) -> Image.Image:
    h = max(a.height, b.height)
    out = Image.new("RGB", (a.width + b.width, h), (255, 255, 255))
    out.paste(a, (0, 0))
    out.paste(b, (a.width, 0))
    return out


def watermarked(im: Image.Image, text: str = "© stockphoto  PREVIEW") -> Image.Image:
    out = im.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=max(16, out.width // 12))
    for y in range(0, out.height, out.height // 4):
        d.text((out.width // 10, y), text, fill=(255, 255, 255, 150), font=font)
    return Image.alpha_composite(out, layer).convert("RGB")


FONTS = ("DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSans-BoldOblique.ttf",
         "STIXGeneralItalic.ttf", "cmss10.ttf")   # all inside matplotlib's wheel


def font(name: str, px: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), max(8, px))


def overlay_text(im: Image.Image, text: str, *, font_name: str = FONTS[0], size: float = 0.06, opacity: float = 0.4,
                 placement: str = "tiled", colour=(255, 255, 255), angle: float = 30.0) -> Image.Image:
    """Text laid over a photo as stock sites and photographers do: ``tiled`` (rows of it across the
    whole picture, turned by ``angle``), ``corner`` (bottom right) or ``centre``; ``size`` is the
    font height as a fraction of the image width, ``opacity`` its alpha."""
    base = im.convert("RGBA")
    f = font(font_name, int(size * base.width))
    fill = (*colour, int(round(255 * opacity)))
    if placement == "tiled":
        side = int(1.5 * max(base.size))
        layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        w = d.textlength(text + "   ", font=f)
        for row, y in enumerate(range(0, side, int(3.5 * f.size))):
            for x in range(-int(w) * (row % 2) // 2, side, int(w)):
                d.text((x, y), text, font=f, fill=fill)
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC)
        left, top = (side - base.width) // 2, (side - base.height) // 2
        layer = layer.crop((left, top, left + base.width, top + base.height))
    else:
        layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        x0, y0, x1, y1 = d.textbbox((0, 0), text, font=f)
        margin = base.width // 30
        xy = ((base.width - (x1 - x0)) // 2, (base.height - (y1 - y0)) // 2) if placement == "centre" else \
            (base.width - (x1 - x0) - margin, base.height - (y1 - y0) - margin - y0)
        d.text(xy, text, font=f, fill=fill)
    return Image.alpha_composite(base, layer).convert("RGB")


def scene_text(im: Image.Image, text: str, *, where: str = "sign", font_name: str = FONTS[1]) -> Image.Image:
    """Legitimate text that belongs to the photo, painted opaque: a ``sign`` (dark letters on a light
    plate in a bottom corner, away from the face) or a ``shirt`` print (below the face)."""
    out = im.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    w, h = out.size
    if where == "sign":
        f = font(font_name, w // 16)
        x0, y0, x1, y1 = d.textbbox((0, 0), text, font=f)
        pad = f.size // 3
        left, top = w // 40, h - (y1 - y0) - 3 * pad - h // 40
        d.rectangle((left, top, left + x1 - x0 + 2 * pad, top + y1 + 2 * pad), fill=(236, 228, 200))
        d.text((left + pad, top + pad), text, font=f, fill=(30, 50, 110))
    else:
        f = font(font_name, w // 14)
        x0, y0, x1, y1 = d.textbbox((0, 0), text, font=f)
        d.text(((w - (x1 - x0)) // 2, int(0.8 * h)), text, font=f, fill=(200, 30, 40))
    return out


STOCK_MARKS = ("Shutterstock", "Getty Images", "alamy", "iStock by Getty Images", "Dreamstime.com", "123RF",
               "depositphotos", "www.annakimphoto.com", "© John Smith 2023", "PREVIEW", "Anna Kim Photography",
               "Adobe Stock")
SCENE_TEXTS = ("CAFE", "EXIT", "Main St", "BAKERY", "NO PARKING", "HOTEL")
SHIRT_TEXTS = ("SUMMER", "NYC", "BOSTON", "TEAM 7")


def fit(im: Image.Image, side: int) -> Image.Image:
    """``im`` scaled (up or down) to a long side of ``side`` pixels."""
    s = side / max(im.size)
    return im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)


def watermark_set(shift: int = 0) -> list[dict]:
    """A held-out set for the watermark filter, all from the shipped photos: each portrait with
    stock and photographer marks (six fonts, sizes 3-9% of the width, opacity 0.2-0.6, tiled at
    several angles, in a corner, over the centre; white, grey and black) and clean counterparts
    (the photo itself, a shop sign in a corner, a T-shirt print). Rows: name, image, marked,
    opacity (None when clean), kind. Photos are scaled to a 1024-px long side, the analysis size of a
    large photo. ``shift`` deals the fonts, sizes, opacities, placements, colours and angles to the
    marks another way: the same marks in combinations the rules were not tuned on."""
    a, g, t1 = (fit(im, 1024) for im in (astronaut(), grace_hopper(), group()))
    bases = {"astronaut": a, "astronaut_flip": a.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
             "astronaut_crop": a.crop((64, 0, 448, 512)), "grace": g,
             "grace_flip": g.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "grace_crop": g.crop((0, 0, 512, 480)),
             "group_left": t1.crop((0, 0, t1.width // 2, t1.height)),
             "group_right": t1.crop((t1.width // 2, 0, t1.width, t1.height))}
    placements = ("tiled", "corner", "tiled", "centre", "tiled", "corner")
    opacities, sizes = (0.2, 0.3, 0.4, 0.5, 0.6), (0.03, 0.045, 0.06, 0.075, 0.09)
    colours, angles = ((255, 255, 255), (255, 255, 255), (128, 128, 128), (0, 0, 0)), (30, 0, -35, 45)
    rows = []
    for i, (name, im) in enumerate(bases.items()):
        rows.append({"name": f"{name}/clean", "image": im, "marked": False, "opacity": None, "kind": "clean"})
        rows.append({"name": f"{name}/sign", "image": scene_text(im, SCENE_TEXTS[i % len(SCENE_TEXTS)]),
                     "marked": False, "opacity": None, "kind": "sign"})
        rows.append({"name": f"{name}/shirt", "image": scene_text(im, SHIRT_TEXTS[i % len(SHIRT_TEXTS)], where="shirt"),
                     "marked": False, "opacity": None, "kind": "shirt"})
        for j, text in enumerate(STOCK_MARKS):
            k = i * len(STOCK_MARKS) + j + shift
            place = placements[k % len(placements)]
            opacity = opacities[k % len(opacities)]
            size = sizes[(k // 2) % len(sizes)] * (0.7 if place == "tiled" and len(text) > 12 else 1.0)
            marked = overlay_text(im, text, font_name=FONTS[k % len(FONTS)], size=size, opacity=opacity,
                                  placement=place, colour=colours[k % len(colours)], angle=angles[k % len(angles)])
            rows.append({"name": f"{name}/{place}-{j}", "image": marked, "marked": True, "opacity": opacity,
                         "kind": place})
    return rows


def bomb_png(side: int = 20000) -> bytes:
    """A tiny file whose header promises side x side pixels."""
    return png_bytes(Image.new("1", (side, side)), optimize=True)


SAMPLE_FOLDERS = ("portraits", "group", "aligned", "nonface", "variants", "bad")  # what write_sample_set writes


def write_sample_set(root: str | os.PathLike) -> dict[str, str]:
    """Write the sample folder used by the demo and the tests; returns name -> relative path.

    Kept by the cheap filters: the portraits, the group photo and their faithful
    variants. Rejected: low_resolution (the 112-px face), bad_aspect (a strip),
    blurry, duplicate (a resized copy), too_large (bomb); quarantined:
    decode_error (truncated, not an image, empty).
    """
    root = Path(root)
    a, g = astronaut(), grace_hopper()
    files: dict[str, bytes] = {
        "portraits/astronaut.png": png_bytes(a),
        "portraits/grace_hopper.jpg": grace_hopper_path().read_bytes(),
        "group/t1.jpg": group_path().read_bytes(),
        "aligned/tom_hanks.png": aligned_face_path().read_bytes(),
        "nonface/cat.jpg": jpeg_bytes(cat()),
        "variants/astronaut_resized_copy.jpg": jpeg_bytes(a.resize((300, 300), Image.Resampling.LANCZOS)),
        "variants/grace_exif_rotated.jpg": exif_rotated(g.resize((430, 504))),
        "variants/grace_16bit_gray.png": gray16(g.resize((420, 492))),
        "variants/astronaut_cmyk.jpg": jpeg_bytes(a.rotate(8, fillcolor=(255, 255, 255)).convert("CMYK")),
        "variants/astronaut_palette.png": png_bytes(a.transpose(Image.Transpose.FLIP_LEFT_RIGHT).quantize(256)),
        "variants/grace_alpha.png": png_bytes(g.crop((20, 20, 480, 560)).convert("RGBA")),
        "variants/small_face_canvas.jpg": jpeg_bytes(small_face_canvas(a)),
        "variants/two_portraits.jpg": jpeg_bytes(side_by_side(a, g)),
        "variants/watermarked.jpg": jpeg_bytes(watermarked(g.crop((0, 40, 512, 600)))),
        "variants/blurred.jpg": jpeg_bytes(a.crop((40, 0, 512, 512)).filter(ImageFilter.GaussianBlur(4))),
        "variants/strip.jpg": jpeg_bytes(group().crop((0, 300, 1280, 580))),
        "bad/truncated.jpg": jpeg_bytes(g)[:20000],
        "bad/not_an_image.jpg": b"this is a text file with a .jpg name\n" * 20,
        "bad/empty.png": b"",
        "bad/bomb.png": bomb_png(),
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return {Path(r).stem: r for r in files}
