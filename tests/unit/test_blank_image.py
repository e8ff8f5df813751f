"""Blank or uniform images are recognised from their pixels (status ``blank_image``, an error message) so that a small
file declaring a large empty canvas cannot spend an OCR budget; a small label on white is not blank. Through the
real OCR reader: tests/ocr/test_ocr_refusals.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from imagequant.imaging import BLANK_MAX_INK_PIXELS, ImageError, check_not_blank
from imagequant.synthetic import font_dir


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75, optimize=True)
    return buf.getvalue()


def _sparse_label(size: tuple[int, int] = (2000, 2000)) -> Image.Image:
    """A large white image holding one small printed label: a few hundred dark pixels."""
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((size[0] // 2, size[1] // 3), "500 g", fill=(40, 40, 40), font=ImageFont.truetype(str(font_dir() / "DejaVuSans.ttf"), 28))
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
