"""RapidOCR's models run by OpenVINO (``ocr.rapidocr.runtime=openvino``) against onnxruntime, on the CPU, with
the real models and images made here: f32 reads the same tokens; bf16 reads them within the stated tolerance
(one pass: the same line texts, boxes within 3 px, confidences within 2 points; with the second look: the same
quantities); timeouts, the reported device and the reader's name; the settings' checks."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from imagequant.config import OcrConfig, load_config
from imagequant.core.entities import ENTITIES
from imagequant.core.tokens import OcrToken
from imagequant.errors import ConfigError
from imagequant.ocr.base import OcrError
from imagequant.ocr.zoo import get_engine, reader_name
from imagequant.text.candidates import extract_candidates
from tests.ocr.test_ocr import IMAGING, _find, _label_image, needs_rapidocr
from tests.ocr.test_ocr_batch import _images

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")

# bf16 rounds every activation to 8 bits of mantissa: a box edge may move by a pixel or two, a confidence
# by a fraction of a point (0.09 measured); these bounds leave room for other CPUs' kernels.
BF16_BOX_PX = 3
BF16_CONF_POINTS = 2.0


def _rapid(runtime: str, precision: str = "f32", **changes: object) -> OcrConfig:
    """The default reader (v6 small, v4 fallback, second look on) run by ``runtime``."""
    cfg = dataclasses.replace(OcrConfig(engine="rapidocr", timeout_s=60.0), **changes)
    cfg.rapidocr = dataclasses.replace(load_config().ocr.rapidocr, runtime=runtime, precision=precision)
    return cfg


def _close(a: list[OcrToken], b: list[OcrToken], box_px: int, conf_points: float) -> bool:
    if [t.text for t in a] != [t.text for t in b]:
        return False
    return all(abs(x.conf - y.conf) <= conf_points and
               max(abs(x.left - y.left), abs(x.top - y.top), abs(x.width - y.width), abs(x.height - y.height)) <= box_px
               for x, y in zip(a, b, strict=True))


@needs_rapidocr
@needs_openvino
def test_openvino_f32_reads_what_onnxruntime_reads() -> None:
    images = _images()
    reference = get_engine(_rapid("onnxruntime"), IMAGING)
    openvino = get_engine(_rapid("openvino"), IMAGING)
    assert openvino.describe_device() == "OpenVINO:CPU(f32)"
    for img in images:
        expected, got = reference.read(img), openvino.read(img)
        assert expected and _close(expected, got, box_px=0, conf_points=0.5), (expected, got)


@needs_rapidocr
@needs_openvino
def test_openvino_bf16_reads_within_the_stated_tolerance() -> None:
    # The tolerance on tokens holds for one pass. The second look reads enlarged regions again and merges
    # them by their text, so a space bf16 reads where f32 does not ("500Watt" / "500 Watt") merges into
    # other tokens; what the product uses of them, the quantities, must still be the same.
    images = _images()
    for second_pass in (False, True):
        reference = get_engine(_rapid("onnxruntime", second_pass=second_pass), IMAGING)
        engine = get_engine(_rapid("openvino", "bf16", second_pass=second_pass), IMAGING)
        # bf16 where the CPU computes it natively, else the CPU plugin runs f32
        assert engine.describe_device() in ("OpenVINO:CPU(bf16)", "OpenVINO:CPU(f32)")
        for img in images:
            expected, got = reference.read(img), engine.read(img)
            assert expected, img
            if not second_pass:
                assert _close(expected, got, BF16_BOX_PX, BF16_CONF_POINTS), (expected, got)
            for entity in ENTITIES:
                assert _quantities(got, entity, img.size) == _quantities(expected, entity, img.size), entity
    assert _find(engine.read(_label_image()[0]), r"^500g$")


def _quantities(tokens: list[OcrToken], entity: str, size: tuple[int, int]) -> set[tuple[float, str]]:
    return {(c.value, c.unit) for c in extract_candidates(tokens, entity, size)}


@needs_rapidocr
@needs_openvino
def test_openvino_reading_past_its_budget_is_an_ocr_timeout() -> None:
    # A model call in progress runs to its end under OpenVINO; the reading stops at the next one.
    img, _ = _label_image()
    engine = get_engine(_rapid("openvino", "bf16", timeout_s=0.2), IMAGING)
    with pytest.raises(OcrError) as info:
        engine.read(img.resize((1800, 720)))
    assert info.value.kind == "ocr_timeout"
    assert _find(get_engine(_rapid("openvino", "bf16"), IMAGING).read(img), r"^500g$")


def test_the_runtime_is_part_of_the_readers_name() -> None:
    assert reader_name(load_config().ocr, load_config().imaging) == "rapidocr:ppocrv6_small+fallback=ppocrv4 r2"
    config = load_config(overrides=["ocr.rapidocr.runtime=openvino", "ocr.rapidocr.precision=bf16"])
    assert reader_name(config.ocr, config.imaging) == "rapidocr:ppocrv6_small+fallback=ppocrv4@openvino-bf16 r2"


def test_runtime_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"ocr\.rapidocr\.runtime must be one of onnxruntime, openvino, got 'tvm'"):
        load_config(overrides=["ocr.rapidocr.runtime=tvm"])
    with pytest.raises(ConfigError, match=r"ocr\.rapidocr\.precision must be one of f32, bf16, int8, got 'int4'"):
        load_config(overrides=["ocr.rapidocr.runtime=openvino", "ocr.rapidocr.precision=int4"])
    with pytest.raises(ConfigError, match=r"ocr\.rapidocr\.precision=bf16 needs ocr\.rapidocr\.runtime=openvino"):
        load_config(overrides=["ocr.rapidocr.runtime=onnxruntime", "ocr.rapidocr.precision=bf16"])
