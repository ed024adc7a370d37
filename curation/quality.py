"""The first stage: read each item once, decode it safely, measure it, and apply
the cheap filters.

Measures: full ``width``/``height`` (EXIF-oriented), ``blur``, ``phash`` and the
aspect-ratio ``bucket``. Rejects: ``too_large``, ``low_resolution``,
``bad_aspect``, ``blurry``; quarantines ``decode_error`` (with the message).

``blur`` is the variance of the Laplacian of the greyscale image resized so its
short side is 512 px (``blur_reference_side``): a fixed scale makes scores
comparable across resolutions. Sharp photos score in the hundreds, a 4-px
Gaussian blur of the same photo below 20.

``phash`` is imagehash's 64-bit DCT hash of the analysis image (hex); the
near-duplicate decision across the whole run happens later (curation/dedup.py).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import cv2
import imagehash
import numpy as np
import pyarrow as pa
from PIL import Image

from curation.buckets import assign_bucket, bucket_name
from curation.video import encode_png, read_video_frames
from infu_model.images import DecodeError, Decoded, Limits, TooLarge, decode, read_file
from infu_model.storage import is_uri, reader_pool
from curation.engine import ConfigError, Stage, between, quarantine, reject


def blur_score(rgb: np.ndarray, reference_side: int = 512) -> float:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    scale = reference_side / min(h, w)
    if scale != 1.0:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def phash_hex(rgb: np.ndarray) -> str:
    # imagehash resizes to 32x32 with Lanczos; an area pre-shrink keeps that cheap
    h, w = rgb.shape[:2]
    if max(h, w) > 256:
        s = 256 / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return str(imagehash.phash(Image.fromarray(rgb)))


@dataclass(frozen=True)
class DecodeLimits:
    """The ``decode:`` block: the decoder's limits and the size the filters look at."""
    max_file_bytes: int = between(1)
    max_pixels: int = between(1)
    analysis_max_side: int = between(64)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_file_bytes, self.max_pixels)


@dataclass(frozen=True)
class FilterOptions:
    min_side: int = between(1)
    aspect: tuple[float, float] = between(0.01, 100)
    min_blur: float = between(0)
    blur_reference_side: int = between(16)

    def __post_init__(self):
        if self.aspect[0] > self.aspect[1]:
            raise ConfigError(f"filters.aspect: {list(self.aspect)} has its lower bound above its upper one")


@dataclass(frozen=True)
class QualityOptions:
    decode: DecodeLimits
    filters: FilterOptions
    buckets: tuple[tuple[int, int], ...] = between(64)
    keep_analysis: bool = False   # pass the analysis image on to the model stages (set by the job)


class QualityStage(Stage):
    """Its options come from a curate config's ``decode``, ``filters`` and ``buckets`` blocks, its pool
    from ``quality.resources`` (pipelines.curate.CurateConfig.quality_stage)."""

    name = "quality"
    reasons = ("decode_error", "too_large", "low_resolution", "bad_aspect", "blurry")
    reads = ("frame", "_uri", "_media")
    writes = (
        pa.field("image", pa.binary()),             # original encoded bytes, never re-encoded
        pa.field("image_format", pa.string()),      # jpeg / png / webp ... (png for video frames)
        pa.field("width", pa.int32()),              # after EXIF orientation
        pa.field("height", pa.int32()),
        pa.field("bucket", pa.string()),            # aspect-ratio bucket "WxH"
        pa.field("blur", pa.float32()),             # sharpness, see blur_score
        pa.field("phash", pa.string()),             # 64-bit perceptual hash, hex
        pa.field("_analysis", pa.binary()),         # decoded RGB uint8, reduced size, row-major (keep_analysis)
        pa.field("_analysis_h", pa.int32()),
        pa.field("_analysis_w", pa.int32()),
    )
    scores = ("blur",)
    stateful = False  # no model: plain Ray tasks scale with the cluster
    Options = QualityOptions

    def setup(self) -> None:
        cv2.setNumThreads(1)  # parallelism comes from Ray's processes, not OpenCV's threads

    def process(self, rows: list[dict]) -> None:
        frames = self._read_frames([r for r in rows if r["_media"] == "video"])
        fetched = self._fetch([r["_uri"] for r in rows if r["_media"] != "video" and is_uri(r["_uri"])])
        for row in rows:
            try:
                self._one(row, frames, fetched)
            except TooLarge as e:
                reject(row, "too_large")
                row["error"] = str(e)
            except (DecodeError, OSError) as e:
                quarantine(row, "decode_error", e)

    def _read_frames(self, rows: list[dict]) -> dict:
        """One pass per clip for all the frames this batch wants from it."""
        wanted = defaultdict(list)
        for r in rows:
            wanted[r["_uri"]].append(int(r["frame"]))
        out = {}
        for uri, idx in wanted.items():
            try:
                got = read_video_frames(uri, idx)
            except Exception as e:  # noqa: BLE001 - reported per row below
                got = e
            for i in idx:
                out[(uri, i)] = got.get(i) if isinstance(got, dict) else got
        return out

    def _fetch(self, uris: list[str]) -> dict:
        """A batch's objects read together: an object store answers each read after a round trip, so
        the reads overlap instead of queueing. A read that fails is its row's error."""
        def read(uri):
            try:
                return read_file(uri, self.opts.decode.limits)
            except Exception as e:  # noqa: BLE001 - raised again for its row in _one
                return e

        return dict(zip(uris, reader_pool().map(read, uris))) if uris else {}

    def _one(self, row: dict, frames: dict, fetched: dict) -> None:
        if row["_media"] == "video":
            got = frames.get((row["_uri"], int(row["frame"])))
            if isinstance(got, Exception):
                raise DecodeError(f"video: {got}")
            if got is None:
                raise DecodeError(f"frame {row['frame']} could not be read (clip shorter than its header says?)")
            row["image"], row["image_format"] = encode_png(got), "png"
            dec = self._from_array(got)
        else:
            uri = row["_uri"]
            data = fetched[uri] if uri in fetched else read_file(uri, self.opts.decode.limits)
            if isinstance(data, Exception):
                raise data
            row["image"] = data
            dec = decode(data, self.opts.decode.limits, self.opts.decode.analysis_max_side)
            row["image_format"] = dec.format
        self._measure(row, dec)

    def _from_array(self, rgb: np.ndarray) -> Decoded:
        h, w = rgb.shape[:2]
        if h * w > self.opts.decode.max_pixels:
            raise TooLarge(f"{w}x{h} frame over {self.opts.decode.max_pixels} pixels")
        s = self.opts.decode.analysis_max_side / max(h, w)
        small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else rgb
        return Decoded(np.ascontiguousarray(small), w, h, "png")

    def _measure(self, row: dict, dec: Decoded) -> None:
        row["width"], row["height"] = dec.width, dec.height
        f = self.opts.filters
        row["blur"] = blur_score(dec.rgb, f.blur_reference_side)
        row["phash"] = phash_hex(dec.rgb)
        aspect = dec.width / dec.height
        if min(dec.width, dec.height) < f.min_side:
            return reject(row, "low_resolution")
        if not f.aspect[0] <= aspect <= f.aspect[1]:
            return reject(row, "bad_aspect")
        if row["blur"] < f.min_blur:
            return reject(row, "blurry")
        row["bucket"] = bucket_name(assign_bucket(dec.width, dec.height, self.opts.buckets))
        if self.opts.keep_analysis:
            row["_analysis"] = dec.rgb.tobytes()
            row["_analysis_h"], row["_analysis_w"] = dec.rgb.shape[:2]
