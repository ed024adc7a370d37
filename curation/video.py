"""Video clips as frames: the frame count, evenly spread frame indices, one-pass frame reads, and
lossless PNG bytes for a frame (it has no file of its own). Image files and stored bytes are
decoded by ``infu_model.images``, the one decoder."""
from __future__ import annotations

import numpy as np

from infu_model.images import DecodeError
from infu_model.storage import local_copy


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless bytes for pixels that had no file of their own (video frames)."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise DecodeError("could not encode frame as PNG")
    return buf.tobytes()


def read_video_frames(path: str, indices: list[int]) -> dict[int, np.ndarray]:
    """RGB frames at ``indices`` (sorted reads, one pass; a clip in object storage is fetched once).
    Missing ones are absent."""
    with local_copy(path) as local:
        return _read_frames(local, indices)


def _read_frames(path: str, indices: list[int]) -> dict[int, np.ndarray]:
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
    with local_copy(path) as local:
        return _frame_count(local)


def _frame_count(path: str) -> int:
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
