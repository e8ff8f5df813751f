"""Memory per image is bounded before any pixel work: every resize step computes its target with
``imaging.resize_target`` and refuses (kind ``pixel_bomb``) a result over the pixel bound.

The images are small files or small in-memory canvases with extreme dimensions: tall, narrow images under
``imaging.max_pixels`` whose CNN, OCR or detector resize would need gigabytes. Nothing here allocates more
than a few tens of MB.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imagequant.config import load_config
from imagequant.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    decode_image,
    ocr_scale,
    prepare_for_cnn,
    prepare_for_ocr,
    resize_target,
)
from tests.httpserver import pixel_bomb_png


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def test_resize_target_arithmetic_and_refusal() -> None:
    assert resize_target((300, 200), scale=4.0) == (1200, 800)
    assert resize_target((2, 20_000_000), scale=1e-4) == (1, 2000)  # at least one pixel a side
    assert resize_target((640, 480), short_side=256) == (341, 256)  # torchvision's Resize(256)
    assert resize_target((480, 640), short_side=256) == (256, 341)
    for size, kwargs in [
        ((2, 20_000_000), {"short_side": 256}),  # 256 x 2.56e9
        ((40, 1_000_000), {"short_side": 256}),  # 256 x 6.4e6
        ((1000, 1000), {"scale": 1e6}),
        ((1000, 1000), {"scale": 1e300}),  # no overflow on the way to the refusal
    ]:
        with pytest.raises(ImageError) as info:
            resize_target(size, max_pixels=DEFAULT_MAX_PIXELS, **kwargs)  # type: ignore[arg-type]
        assert info.value.kind == "pixel_bomb"
    with pytest.raises(ImageError) as info:
        resize_target((300, 200), scale=4.0, max_pixels=959_999)
    assert info.value.kind == "pixel_bomb"
    assert resize_target((300, 200), scale=4.0, max_pixels=960_000) == (1200, 800)
    with pytest.raises(ValueError):
        resize_target((300, 200), scale=float("nan"))
    with pytest.raises(ValueError):
        resize_target((300, 200))


@pytest.mark.parametrize("size", [(2, 20_000_000), (40, 1_000_000), (1_000_000, 40)])
def test_cnn_resize_of_extreme_aspect_ratio_is_refused(size: tuple[int, int]) -> None:
    img = Image.new("1", size)  # under max_pixels, a few tens of MB as a 1-bit canvas
    assert size[0] * size[1] <= DEFAULT_MAX_PIXELS
    with pytest.raises(ImageError) as info:
        prepare_for_cnn(img, 224)
    assert info.value.kind == "pixel_bomb"


def test_cnn_resize_uses_the_given_bound() -> None:
    img = Image.new("L", (100, 1000), 128)  # resized to 256 x 2560
    with pytest.raises(ImageError):
        prepare_for_cnn(img, 224, max_pixels=256 * 2560 - 1)
    assert prepare_for_cnn(img, 224, max_pixels=256 * 2560).shape == (224, 224, 3)


def test_ocr_resize_is_bounded() -> None:
    img = Image.new("RGB", (300, 200), "white")
    assert ocr_scale(img.size, 1000, 2400, 4.0) == 4.0
    with pytest.raises(ImageError) as info:
        prepare_for_ocr(img, 1000, 2400, 4.0, max_pixels=500_000)
    assert info.value.kind == "pixel_bomb"
    # A tall, narrow image is brought down by the long-side cap, not up by the short-side minimum.
    tall, scale = prepare_for_ocr(Image.new("L", (2, 2_000_000)), 1000, 2400, 4.0)
    assert tall.size == (1, 2400) and scale <= 0.5


def test_decode_refuses_narrow_bombs_from_the_header() -> None:
    for width, height in [(1, 60_000_001), (2, 30_000_001), (60_000_001, 1)]:
        data = _png_header(width, height)
        assert len(data) < 200
        with pytest.raises(ImageError) as info:
            decode_image(data, max_pixels=DEFAULT_MAX_PIXELS)
        assert info.value.kind == "pixel_bomb"


def test_decode_refuses_formats_whose_header_can_understate_the_size() -> None:
    # An ICO whose directory says 16x16 but whose embedded PNG declares 30000 x 30000 pixels.
    inner = _png_header(30_000, 30_000)
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 6 + 16)
    ico = struct.pack("<HHH", 0, 1, 1) + entry + inner
    with pytest.raises(ImageError):
        decode_image(ico)
    # The formats the fetcher accepts still decode.
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        Image.new("RGB", (8, 6), (10, 20, 30)).save(buf, format=fmt)
        assert decode_image(buf.getvalue()).size == (8, 6), fmt


def test_process_image_records_pixel_bomb_for_a_tall_narrow_png(tmp_path: Path) -> None:
    from imagequant.pipeline.images import process_image
    from imagequant.scoring.second_look import lacks_plausible_candidate

    data = pixel_bomb_png(4, 1_000_000)  # 4 Mpx, a few KB on disk
    assert len(data) < 200_000
    (tmp_path / "narrow.png").write_bytes(data)  # found in --images-dir by the link's file name
    config = load_config(overrides=["imaging.max_pixels=5000000", "cnn.enabled=true", "ocr.engine=tesseract"])
    record = process_image("id", "http://img.invalid/a/narrow.png", config, str(tmp_path),
                           needs_second_look=lacks_plausible_candidate)
    assert record["status"] == "pixel_bomb", record["error"]
    assert "CNN resize" in record["error"]
