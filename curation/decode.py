"""Safe decoding for analysis. The original bytes are never touched; we only
look at them.

Guards, in the order they apply:
- file size over ``max_file_bytes`` -> ``too_large`` (the bytes are not even read);
- header pixel count over ``max_pixels`` -> ``too_large`` (decompression bomb;
  checked before any pixel is decoded);
- anything Pillow cannot decode *completely* -> ``DecodeError``: truncated files
  raise, because ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False.

What comes out is an 8-bit RGB array, EXIF orientation applied, at most
``analysis_max_side`` on its long side. JPEGs are decoded straight at a reduced
DCT scale (``Image.draft``), which is 2-6x cheaper than a full decode + resize.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageFile

from curation.options import between

ImageFile.LOAD_TRUNCATED_IMAGES = False  # never accept a truncated file silently

_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
_T = Image.Transpose
_TRANSPOSE = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM,
              5: _T.TRANSPOSE, 6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
_SRGB = ImageCms.createProfile("sRGB")


class DecodeError(Exception):
    """The file is not a complete, decodable image."""


class TooLarge(Exception):
    """The file or its pixel count is over the configured limit."""


@dataclass(frozen=True)
class DecodeLimits:
    max_file_bytes: int = between(1, default=64 << 20)
    max_pixels: int = between(1, default=100_000_000)
    analysis_max_side: int = between(64, default=1024)


@dataclass
class Decoded:
    rgb: np.ndarray      # HxWx3 uint8, reduced for analysis
    width: int           # full size after EXIF orientation
    height: int
    format: str          # jpeg, png, webp, ...


def read_file(path: str, limits: DecodeLimits) -> bytes:
    size = os.path.getsize(path)
    if size > limits.max_file_bytes:
        raise TooLarge(f"file is {size} bytes, limit {limits.max_file_bytes}")
    with open(path, "rb") as f:
        return f.read()


def decode(data: bytes, limits: DecodeLimits) -> Decoded:
    """Decode ``data`` for analysis; raise DecodeError or TooLarge."""
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
        scale = limits.analysis_max_side / max(w, h)
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
    if max(rgb.size) > limits.analysis_max_side:
        rgb.thumbnail((limits.analysis_max_side, limits.analysis_max_side), Image.Resampling.BILINEAR)
    full_w, full_h = (h, w) if orientation in _SWAPS_AXES else (w, h)
    return Decoded(np.asarray(rgb, dtype=np.uint8), full_w, full_h, fmt)


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


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless bytes for pixels that had no file of their own (video frames)."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise DecodeError("could not encode frame as PNG")
    return buf.tobytes()


def read_video_frames(path: str, indices: list[int]) -> dict[int, np.ndarray]:
    """RGB frames at ``indices`` (sorted reads, one pass). Missing ones are absent."""
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise DecodeError("video could not be opened")
    out: dict[int, np.ndarray] = {}
    try:
        wanted = sorted(set(indices))
        pos = 0
        for idx in wanted:
            if idx - pos > 32:  # far ahead: let the demuxer seek instead of decoding every frame
                cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                pos = idx
            while pos < idx:
                if not cap.grab():
                    return out
                pos += 1
            ok, frame = cap.read()
            pos += 1
            if not ok or frame is None:
                return out
            out[idx] = np.ascontiguousarray(frame[:, :, ::-1])
    finally:
        cap.release()
    return out


def video_frame_count(path: str) -> int:
    """Frames in a clip, from the container header, or by counting when it has none."""
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise DecodeError("video could not be opened")
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            n = 0
            while cap.grab():
                n += 1
        return n
    finally:
        cap.release()


def even_indices(n: int, k: int) -> list[int]:
    """k frame indices spread evenly over n frames (all of them when n <= k)."""
    if n <= 0 or k <= 0:
        return []
    if n <= k:
        return list(range(n))
    return [int(round(i * (n - 1) / (k - 1))) for i in range(k)] if k > 1 else [n // 2]
