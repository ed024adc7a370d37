"""The one decoder (infu_model/images.py) on real photos and the bad-file zoo derived from them."""
import io

import numpy as np
import pytest
from PIL import Image

from curation import samples
from infu_model.images import DecodeError, Limits, TooLarge, decode, to_rgb8

LIM = Limits()


def _mean_abs(a, b):
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.99])
def test_truncated_jpeg_is_an_error_not_a_grey_image(cut):
    data = samples.grace_hopper_path().read_bytes()
    with pytest.raises(DecodeError):
        decode(data[: int(len(data) * cut)], LIM)


def test_truncated_png_is_an_error():
    data = samples.png_bytes(samples.astronaut())
    with pytest.raises(DecodeError):
        decode(data[: len(data) // 2], LIM)


@pytest.mark.parametrize("data", [b"", b"GIF89a garbage", b"hello world\n" * 50, bytes(range(256)) * 8])
def test_non_images_are_decode_errors(data):
    with pytest.raises(DecodeError):
        decode(data, LIM)


def test_bomb_is_refused_from_the_header():
    with pytest.raises(TooLarge):
        decode(samples.bomb_png(12000), Limits(max_pixels=50_000_000))  # under Pillow's own limit
    with pytest.raises(TooLarge):
        decode(samples.bomb_png(20000), LIM)  # over Pillow's limit too


def test_sixteen_bit_greyscale_keeps_its_tones():
    g = samples.grace_hopper()
    ref = np.asarray(g.convert("L"))
    d = decode(samples.gray16(g), LIM)
    assert d.rgb.mean() < 200, "a 16-bit portrait must not come out white"
    assert _mean_abs(d.rgb[:, :, 0], ref) < 1.5


def test_sixteen_bit_mode_I_is_scaled_too():
    a = (np.asarray(samples.grace_hopper().convert("L"), dtype=np.int32) * 257)
    out = np.asarray(to_rgb8(Image.fromarray(a, "I")))
    assert _mean_abs(out[:, :, 0], a // 257) < 1


def test_cmyk_jpeg_matches_the_rgb_original():
    a = samples.astronaut()
    d = decode(samples.jpeg_bytes(a.convert("CMYK"), quality=95), LIM)
    assert _mean_abs(d.rgb, np.asarray(a)) < 8


def test_alpha_is_composited_on_white_and_palette_is_expanded():
    a = samples.astronaut().convert("RGBA")
    px = np.asarray(a).copy()
    px[:50, :50, 3] = 0  # transparent corner
    d = decode(samples.png_bytes(Image.fromarray(px)), LIM)
    assert (d.rgb[:50, :50] == 255).all()
    p = decode(samples.png_bytes(samples.astronaut().quantize(256)), LIM)
    assert p.rgb.shape == (512, 512, 3) and _mean_abs(p.rgb, np.asarray(samples.astronaut())) < 12


def test_exif_orientation_is_applied():
    g = samples.grace_hopper()
    d = decode(samples.exif_rotated(g), LIM)
    assert (d.width, d.height) == g.size
    assert _mean_abs(d.rgb, np.asarray(g)) < 6


def test_large_jpeg_is_decoded_reduced_with_its_full_size_reported():
    big = samples.group().resize((4000, 2770))
    d = decode(samples.jpeg_bytes(big), LIM, max_side=1000)
    assert (d.width, d.height) == (4000, 2770)
    assert max(d.rgb.shape[:2]) == 1000


def test_greyscale_and_one_bit_become_rgb():
    g = samples.grace_hopper()
    for mode in ("L", "1", "LA"):
        buf = io.BytesIO()
        g.convert(mode).save(buf, "PNG")
        d = decode(buf.getvalue(), LIM)
        assert d.rgb.shape == (600, 512, 3)
