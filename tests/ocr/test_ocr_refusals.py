"""What the per-image pipeline refuses before or inside the real OCR reader: a large blank image gets its own status
without an OCR pass, a sparse label on white is read, and a tall narrow image whose detector input RapidOCR would
enlarge to gigabytes is a ``pixel_bomb``. The pure checks behind these are tested in tests/unit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from imagequant.config import ImagingConfig, OcrConfig, load_config
from imagequant.imaging import ImageError
from tests.ocr.test_ocr import needs_rapidocr
from tests.unit.test_blank_image import _jpeg, _sparse_label

CONFIG = ["cnn.enabled=false", "ocr.engine=rapidocr"]


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


@needs_rapidocr
def test_rapidocr_detector_input_of_a_tall_narrow_image_is_refused(tmp_path: Path) -> None:
    from imagequant.ocr.zoo import get_engine
    from imagequant.pipeline.images import process_image
    from imagequant.scoring.second_look import lacks_plausible_candidate

    # 10 x 200,000: the detector copy is 1 x 960, which RapidOCR would enlarge to 736 x 706,560.
    engine = get_engine(OcrConfig(engine="rapidocr", rotated_pass=False, second_pass=False), ImagingConfig())
    with pytest.raises(ImageError) as info:
        engine.read(Image.new("RGB", (10, 200_000), "white"))
    assert info.value.kind == "pixel_bomb"
    # Through the per-image pipeline the refusal is the image's status, not an ocr_error (the strip has ink: a
    # uniform one would be a blank_image, never read).
    strip = Image.new("L", (10, 200_000), 255)
    for top in range(0, strip.height, 100):
        strip.paste(0, (0, top, 10, top + 2))
    strip.save(tmp_path / "strip.png")
    config = load_config(overrides=["cnn.enabled=false", "ocr.engine=rapidocr", "ocr.rotated_pass=false",
                                    "ocr.second_pass=false"])
    record = process_image("id", "http://img.invalid/b/strip.png", config, str(tmp_path),
                           needs_second_look=lacks_plausible_candidate)
    assert record["status"] == "pixel_bomb", record["error"]
