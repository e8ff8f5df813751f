"""Blank or uniform images are recognised before OCR (status ``blank_image``, an error message, no OCR pass), so a
small file declaring a large empty canvas cannot spend an OCR budget; a small label on white is not blank."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imagequant.config import load_config
from imagequant.imaging import BLANK_MAX_INK_PIXELS, ImageError, check_not_blank
from tests.ocr.test_ocr import _font, needs_rapidocr

CONFIG = ["cnn.enabled=false", "ocr.engine=rapidocr"]


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75, optimize=True)
    return buf.getvalue()


def _sparse_label(size: tuple[int, int] = (2000, 2000)) -> Image.Image:
    """A large white image holding one small printed label: a few hundred dark pixels."""
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((size[0] // 2, size[1] // 3), "500 g", fill=(40, 40, 40), font=_font(28))
    return img


def test_uniform_images_are_blank_and_a_small_label_is_not() -> None:
    rng = np.random.default_rng(3)
    noisy_gray = np.clip(128 + rng.normal(0, 6, (400, 300, 3)), 0, 255).astype(np.uint8)
    transparent = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    buf = io.BytesIO()
    transparent.save(buf, "PNG")
    from imagequant.imaging import decode_image

    for img in (Image.new("RGB", (640, 480), "white"), Image.new("RGB", (50, 50), (12, 200, 90)),
                Image.fromarray(noisy_gray), decode_image(buf.getvalue())):  # transparent: white after decoding
        with pytest.raises(ImageError) as info:
            check_not_blank(img)
        assert info.value.kind == "blank_image" and "uniform" in str(info.value)
    check_not_blank(_sparse_label())  # a few hundred pixels of ink on 4 Mpx of white
    speck = Image.new("RGB", (2000, 2000), "white")
    speck.paste((0, 0, 0), (10, 10, 10 + BLANK_MAX_INK_PIXELS, 11))  # one short line as long as the limit
    check_not_blank(speck)


@needs_rapidocr
def test_a_large_blank_jpeg_gets_its_own_status_without_ocr(tmp_path: Path) -> None:
    from imagequant.pipeline.images import process_image
    from imagequant.scoring.second_look import lacks_plausible_candidate

    # A small file declaring 900 x 60,000 pixels (under the pixel limit) that decodes blank: read by OCR it
    # would use the whole OCR budget; it must be recognised from its pixels in well under a second.
    data = _jpeg(Image.new("L", (900, 60_000), 255))
    assert len(data) < 400_000
    (tmp_path / "tall.jpg").write_bytes(data)
    config = load_config(overrides=CONFIG)
    started = time.perf_counter()
    record = process_image("id", "http://img.invalid/x/tall.jpg", config, str(tmp_path), ["height"],
                           needs_second_look=lacks_plausible_candidate)
    wall = time.perf_counter() - started
    assert record["status"] == "blank_image", record["error"]
    assert "900x60000 image is uniform" in record["error"] and "OCR not run" in record["error"]
    assert (record["width"], record["height"]) == (900, 60_000)
    assert not record["ocr_passes"] and not record["tok_text"]
    assert record["seconds_ocr"] < 1.0 and wall < 10.0, (record["seconds_ocr"], wall)


@needs_rapidocr
def test_a_sparse_label_is_read(tmp_path: Path) -> None:
    from imagequant.pipeline.images import process_image
    from imagequant.scoring.second_look import lacks_plausible_candidate

    _sparse_label((1200, 1200)).save(tmp_path / "sparse.png")
    record = process_image("id", "http://img.invalid/x/sparse.png", load_config(overrides=CONFIG), str(tmp_path),
                           ["item_weight"], needs_second_look=lacks_plausible_candidate)
    assert record["status"] == "ok", record["error"]
    assert "500" in record["ocr_text"]
