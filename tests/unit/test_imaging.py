"""Image decoding (every Pillow mode, EXIF, truncation, pixel bombs) and the OCR / CNN preprocessing."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from imagequant.imaging import (
    ImageError,
    decode_image,
    ocr_scale,
    prepare_for_cnn,
    prepare_for_ocr,
    to_rgb,
)


def _save(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring width x height, a tiny IDAT and IEND: a decompression bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_rgb_jpeg_decodes_to_rgb() -> None:
    src = Image.new("RGB", (64, 48), (200, 10, 10))
    img = decode_image(_save(src, "JPEG", quality=95))
    assert img.mode == "RGB" and img.size == (64, 48)
    r, g, b = img.getpixel((32, 24))
    assert r > 180 and g < 40 and b < 40


def test_cmyk_jpeg_becomes_rgb_with_right_colours() -> None:
    src = Image.new("CMYK", (64, 64), (0, 0, 0, 0))  # no ink: white
    src.paste((255, 0, 0, 0), (0, 0, 32, 64))  # full cyan on the left half
    img = decode_image(_save(src, "JPEG", quality=95))
    assert img.mode == "RGB"
    white = img.getpixel((48, 32))
    cyan = img.getpixel((8, 32))
    assert min(white) > 230
    assert cyan[0] < 40 and cyan[1] > 200 and cyan[2] > 200


def test_palette_with_transparency_composites_on_white() -> None:
    src = Image.new("P", (40, 20), 0)
    src.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 black (transparent), 1 red
    src.paste(1, (20, 0, 40, 20))
    data = _save(src, "PNG", transparency=0)
    img = decode_image(data)
    assert img.mode == "RGB"
    assert img.getpixel((5, 10)) == (255, 255, 255)  # transparent black shows as white, not black
    assert img.getpixel((30, 10)) == (255, 0, 0)


def test_palette_without_transparency_keeps_colours() -> None:
    src = Image.new("P", (10, 10), 1)
    src.putpalette([0, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    assert decode_image(_save(src, "PNG")).getpixel((5, 5)) == (0, 0, 255)


def test_rgba_png_alpha_composited_on_white() -> None:
    src = Image.new("RGBA", (50, 50), (0, 0, 0, 0))  # fully transparent black background
    src.paste((10, 20, 30, 255), (10, 10, 20, 20))  # opaque dark square ("text")
    src.paste((0, 0, 0, 128), (30, 30, 40, 40))  # half-transparent black
    img = decode_image(_save(src, "PNG"))
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (255, 255, 255)
    assert img.getpixel((15, 15)) == (10, 20, 30)
    assert all(120 <= c <= 135 for c in img.getpixel((35, 35)))


def test_la_png_alpha_composited_on_white() -> None:
    src = Image.new("LA", (20, 20), (0, 0))
    src.paste((0, 255), (0, 0, 10, 20))
    img = decode_image(_save(src, "PNG"))
    assert img.getpixel((15, 10)) == (255, 255, 255)
    assert img.getpixel((5, 10)) == (0, 0, 0)


def test_16bit_png_scaled_to_8bit() -> None:
    arr = np.zeros((10, 30), dtype=np.uint16)
    arr[:, 10:20] = 32896  # mid gray in 16 bits
    arr[:, 20:] = 65535
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    data = _save(src, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = decode_image(data)
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == (0, 0, 0)
    assert img.getpixel((15, 5)) == (128, 128, 128)  # Pillow's own convert would clip this to white
    assert img.getpixel((25, 5)) == (255, 255, 255)


def test_32bit_int_and_float_images_scaled() -> None:
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert f.mode == "F"
    assert [to_rgb(f).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    i32 = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))
    assert i32.mode == "I"
    assert [to_rgb(i32).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    # A float TIFF goes through decode_image too.
    img = decode_image(_save(f, "TIFF"))
    assert img.mode == "RGB" and img.getpixel((2, 0)) == (255, 255, 255)


def test_one_bit_and_grayscale_images() -> None:
    src = Image.new("1", (16, 16), 1)
    src.paste(0, (0, 0, 8, 16))
    img = decode_image(_save(src, "PNG"))
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (0, 0, 0) and img.getpixel((12, 2)) == (255, 255, 255)
    gray = decode_image(_save(Image.new("L", (8, 8), 77), "PNG"))
    assert gray.getpixel((1, 1)) == (77, 77, 77)


def test_exif_orientation_applied() -> None:
    # Stored 200x100, left half red, right half blue; orientation 6 = display rotated 90 degrees clockwise.
    src = Image.new("RGB", (200, 100), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    img = decode_image(_save(src, "JPEG", quality=95, exif=exif.tobytes()))
    assert img.size == (100, 200)
    top, bottom = img.getpixel((50, 20)), img.getpixel((50, 180))
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is on top once upright
    assert bottom[2] > 200 and bottom[0] < 60


def test_truncated_jpeg_is_an_error_not_gray_fill() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    rng = np.random.default_rng(0)
    src = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    data = _save(src, "JPEG", quality=90)
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) * 6 // 10])
    assert info.value.kind == "truncated"


def test_truncated_png_is_an_error() -> None:
    rng = np.random.default_rng(1)
    data = _save(Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.kind in ("truncated", "decode_error")


def test_garbage_and_empty_bytes() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(b"<html>not an image</html>")
    assert info.value.kind == "decode_error"
    with pytest.raises(ImageError) as info:
        decode_image(b"")
    assert info.value.kind == "empty"


def test_pixel_bomb_refused_from_header_without_allocating() -> None:
    bomb = _png_header_only(10_000, 8_000)  # 80 Mpx: under Pillow's own warning limit, over ours
    assert len(bomb) < 200
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as info:
            decode_image(bomb, max_pixels=60_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.kind == "pixel_bomb"
    assert peak < 5_000_000  # decoding 80 Mpx RGB would need 240 MB


def test_pixel_guard_uses_the_given_limit_not_pillows_global() -> None:
    data = _save(Image.new("RGB", (100, 100), "white"), "PNG")
    with pytest.raises(ImageError) as info:
        decode_image(data, max_pixels=9_999)
    assert info.value.kind == "pixel_bomb"
    assert decode_image(data, max_pixels=10_000).size == (100, 100)
    # Far beyond Pillow's own hard limit (which refuses it inside Image.open): told with the setting's number.
    with pytest.raises(ImageError) as info:
        decode_image(_png_header_only(100_000, 100_000), max_pixels=60_000_000)
    assert info.value.kind == "pixel_bomb"
    assert "imaging.max_pixels=60000000" in str(info.value) and "178956970" not in str(info.value)


# pytest resets warning filters for each test, which drops imaging's process-wide silencing of this warning.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_pixel_limit_above_pillows_own_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow refuses images over twice its process-wide MAX_IMAGE_PIXELS (178,956,970 by default) before our
    # check runs; the setting must decide. Pillow's limit is lowered here so an image over it costs nothing.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow's hard refusal: over 2,000 pixels
    img = decode_image(_save(Image.new("RGB", (100, 100), "white"), "PNG"), max_pixels=60_000_000)
    assert img.size == (100, 100)
    with pytest.raises(ImageError) as info:
        decode_image(_save(Image.new("RGB", (200, 200), "white"), "PNG"), max_pixels=20_000)
    assert info.value.kind == "pixel_bomb" and "imaging.max_pixels=20000" in str(info.value)
    # At Pillow's real limit: a setting of 200,000,000 is the number an image just over it is refused with.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS and 89_478_485)
    with pytest.raises(ImageError) as info:
        decode_image(_png_header_only(20_000, 10_001), max_pixels=200_000_000)
    assert info.value.kind == "pixel_bomb"
    assert "imaging.max_pixels=200000000" in str(info.value) and "178956970" not in str(info.value)


def test_image_error_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        ImageError("nope", "x")


@pytest.mark.parametrize(
    ("size", "expected_size", "expected_scale"),
    [
        ((300, 200), (1200, 800), 4.0),  # short side 200 -> 1000 wants 5x, capped at 4x
        ((1500, 1200), (1500, 1200), 1.0),  # already big enough
        ((4000, 3000), (2400, 1800), 0.6),  # long side capped
        ((900, 100), (2400, 267), 2400 / 900),  # the long-side cap wins over the upscale
    ],
)
def test_prepare_for_ocr_sizes(size: tuple[int, int], expected_size: tuple[int, int], expected_scale: float) -> None:
    img = Image.new("RGB", size, "white")
    out, scale = prepare_for_ocr(img, min_side=1000, max_side=2400, max_upscale=4.0)
    assert out.size == expected_size
    assert scale == pytest.approx(expected_scale, rel=2e-3)
    # Box coordinates divided by the scale land back in the original image.
    assert out.width / scale == pytest.approx(size[0], abs=0.5)
    assert ocr_scale(size, 1000, 2400, 4.0) == pytest.approx(expected_scale, rel=2e-3)


def test_prepare_for_cnn_shape_and_centre_crop() -> None:
    src = Image.new("RGB", (640, 480), (0, 0, 0))
    src.paste((255, 255, 255), (300, 220, 340, 260))  # a white square in the centre
    arr = prepare_for_cnn(src, size=224)
    assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
    assert arr[112, 112].min() > 200 and arr[5, 5].max() < 20
    tall = prepare_for_cnn(Image.new("L", (100, 900), 128), size=64)
    assert tall.shape == (64, 64, 3)
