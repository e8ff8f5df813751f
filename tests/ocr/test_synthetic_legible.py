"""The synthetic sample is legible: a real OCR engine (Tesseract) reads the value numbers printed on its easy images,
so tests that run OCR over generated images test reading, not noise. The generator itself: tests/unit/test_synthetic.py."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from imagequant.synthetic import iter_items, render_item
from tests.unit.test_synthetic import _hand_spec

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _numbers_read(image) -> set[float]:  # noqa: ANN001 - a PIL image
    import pytesseract

    data = pytesseract.image_to_data(image, config="--psm 11 --oem 1", output_type=pytesseract.Output.DICT)
    found: set[float] = set()
    for text in data["text"]:
        for m in _NUMBER.findall(text):
            for cand in (m.replace(",", ""), m.replace(",", ".")):
                try:
                    found.add(round(float(cand), 4))
                except ValueError:
                    continue
    return found


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary not installed")
def test_tesseract_reads_values_on_easy_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Easy images are for tests: Tesseract (psm 11, one thread) must read most printed value numbers.

    Over 200 easy images the measured share is ~0.97; a handful must clear 0.75.
    """
    pytest.importorskip("pytesseract")
    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")
    hits = total = 0
    for item in iter_items(6, 2024, difficulty="easy", image_size=(640, 800)):
        found = _numbers_read(item.image)
        for truth in item.spec.truths:
            total += 1
            hits += round(truth.value, 4) in found
    assert total >= 6
    assert hits / total >= 0.75, f"Tesseract read {hits}/{total} value numbers"
    # A hand-made spec with known text reads back too.
    found = _numbers_read(render_item(_hand_spec("package"), np.random.default_rng(1)))
    assert 500.0 in found
