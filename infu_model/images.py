"""The one decoder: stored bytes -> upright 8-bit RGB. Every stage that turns an image file or a
stored ``image`` column into pixels (curation's filters, captioners, training, synthesis, eval,
the report, ``infu generate``) comes through here, so all of them see the same picture.

Guards, in the order they apply:
- file size over ``max_file_bytes`` -> ``TooLarge`` (a file on disk is not even read);
- header pixel count over ``max_pixels`` -> ``TooLarge`` (decompression bomb; checked before
  any pixel is decoded);
- anything Pillow cannot decode *completely* -> ``DecodeError``: truncated files raise,
  because ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False.

What comes out is EXIF-oriented (a phone's sideways JPEG comes out upright, the orientation
curation measured keypoints in), with 16-bit greyscale scaled to 8 bits (not clipped to white),
CMYK through its ICC profile, transparency on white. ``max_side`` asks for a smaller picture:
JPEGs then decode straight at a reduced DCT scale (``Image.draft``), 2-6x cheaper than a full
decode and resize.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = False  # never accept a truncated file silently

_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
_T = Image.Transpose
_TRANSPOSE = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM,
              5: _T.TRANSPOSE, 6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
_SRGB = ImageCms.createProfile("sRGB")


class DecodeError(Exception):
    """The bytes are not a complete, decodable image."""


class TooLarge(Exception):
    """The file or its pixel count is over the limit."""


@dataclass(frozen=True)
class Limits:
    """What one image may cost before a pixel is decoded (curation sets them in ``decode:``)."""
    max_file_bytes: int = 64 << 20
    max_pixels: int = 100_000_000


LIMITS = Limits()


@dataclass
class Decoded:
    rgb: np.ndarray      # HxWx3 uint8, upright, at most ``max_side`` on its long side when asked
    width: int           # full size after EXIF orientation
    height: int
    format: str          # jpeg, png, webp, ...


def read_file(path: str | os.PathLike, limits: Limits = LIMITS) -> bytes:
    """A file's (or an object's) bytes, refused (TooLarge) before reading when over ``max_file_bytes``."""
    from infu_model import storage

    size = storage.size(path) if storage.is_uri(path) else os.path.getsize(path)
    if size > limits.max_file_bytes:
        raise TooLarge(f"file is {size} bytes, limit {limits.max_file_bytes}")
    return storage.read_bytes(path)


def decode(data: bytes, limits: Limits = LIMITS, max_side: int | None = None) -> Decoded:
    """Decode ``data`` to upright RGB (at most ``max_side`` on its long side); raise DecodeError or TooLarge."""
    if len(data) > limits.max_file_bytes:
        raise TooLarge(f"image is {len(data)} bytes, limit {limits.max_file_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise TooLarge(str(e)) from None
        except Image.UnidentifiedImageError:
            raise DecodeError("not a recognised image format" if data else "empty file") from None
        except Exception as e:  # struct errors on garbage headers...
            raise DecodeError(f"{type(e).__name__}: {e}") from None
        w, h = im.size
        if w * h > limits.max_pixels:
            raise TooLarge(f"{w}x{h} = {w * h} pixels, limit {limits.max_pixels}")
        if w < 1 or h < 1:
            raise DecodeError(f"empty image {w}x{h}")
        fmt = (im.format or "unknown").lower()
        orientation = _orientation(im)
        scale = max_side / max(w, h) if max_side else 1.0
        if scale < 1 and fmt == "jpeg":
            im.draft(None, (max(1, int(w * scale)), max(1, int(h * scale))))
        try:
            im.load()
        except Image.DecompressionBombError as e:
            raise TooLarge(str(e)) from None
        except Exception as e:  # truncated, corrupt scan data, bad zlib stream...
            raise DecodeError(f"{type(e).__name__}: {e}") from None
    rgb = to_rgb8(im)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    full_w, full_h = (h, w) if orientation in _SWAPS_AXES else (w, h)
    return Decoded(np.asarray(rgb, dtype=np.uint8), full_w, full_h, fmt)


def rgb_image(data: bytes, limits: Limits = LIMITS) -> Image.Image:
    """Stored bytes as a full-size upright RGB PIL image."""
    return Image.fromarray(decode(data, limits).rgb)


def open_rgb(path: str | os.PathLike, limits: Limits = LIMITS) -> Image.Image:
    """An image file as a full-size upright RGB PIL image; errors name the file."""
    try:
        return rgb_image(read_file(path, limits), limits)
    except (DecodeError, TooLarge) as e:
        raise type(e)(f"{path}: {e}") from None


def upright(im: Image.Image) -> Image.Image:
    """An image someone already opened, as the decoder would give it: EXIF-oriented 8-bit RGB."""
    orientation = _orientation(im)
    rgb = to_rgb8(im)
    return rgb.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else rgb


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not fail an otherwise good image
        return 1


def to_rgb8(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB without the usual traps.

    16-bit greyscale (``I;16*``, and ``I`` holding 16-bit values) is scaled by
    1/257: Pillow's own ``convert`` clips it to 255, which turns a portrait white.
    Transparency is composited on white; CMYK goes through its ICC profile when
    it carries one (Adobe CMYK JPEGs look wrong otherwise).
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.int64)
        if mode.startswith("I;16") or a.max(initial=0) > 255:
            a = np.clip(a, 0, 65535) // 257
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode == "CMYK" and im.info.get("icc_profile"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
            return ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGB")
        except Exception:  # unusable profile: fall back to the plain formula
            pass
    return im if mode == "RGB" else im.convert("RGB")
