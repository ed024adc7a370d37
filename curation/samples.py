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


def bomb_png(side: int = 20000) -> bytes:
    """A tiny file whose header promises side x side pixels."""
    return png_bytes(Image.new("1", (side, side)), optimize=True)


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
