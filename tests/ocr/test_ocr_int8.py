"""The detectors' int8 copies (``ocr.rapidocr.precision=int8``, imagequant/ocr/int8.py), with the real models
and images made here: the copy is built once per machine and found again; a machine without it builds it
where it can write, byte for byte the same; the engine runs it on the CPU and reads the synthetic renders
within the stated tolerance of the f32 detector; the detector's pre-processing is RapidOCR's, bit for bit;
the settings' checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imagequant import model_cache
from imagequant.config import OcrConfig, load_config
from imagequant.core.tokens import OcrToken
from imagequant.devices import INT8_WITHOUT_VNNI, cpu_flags, has_int8_dot_product
from imagequant.errors import ConfigError
from imagequant.ocr import int8
from imagequant.ocr.zoo import get_engine, reader_name
from imagequant.synthetic import make_spec, render_item
from tests.ocr.test_ocr import IMAGING, _find, _label_image, needs_rapidocr

# The int8 detector finds the same lines, give or take a faint or tiny one at the edge of its threshold, and a
# box may shift by a few pixels, which can change a crop's reading (often the f32 reading's stray duplicates of
# the second look): over the renders, at least this share of the f32 reading's words is read again at about
# the same place, and every quantity-like word (a digit, three characters or more) is read. On a CPU with
# VNNI 0.90 was measured; without it (AVX2 only: AMD Zen 3) onnxruntime's int8 kernels read less alike, 0.75,
# and real labels worse (docs/ocr.md), which the engine's device description and the extract job say.
INT8_SAME_WORDS = 0.85
INT8_SAME_WORDS_WITHOUT_VNNI = 0.65
INT8_BOX_PX = 6


def _rapid(precision: str) -> OcrConfig:
    """The default reader (v6 small, v4 fallback, second look on) with ``precision``, on the CPU."""
    cfg = OcrConfig(engine="rapidocr", timeout_s=60.0, device="cpu")
    cfg.rapidocr = dataclasses.replace(load_config().ocr.rapidocr, precision=precision)
    return cfg


def _renders(count: int) -> list:
    rng = np.random.default_rng(515)  # not the calibration seed: these renders were not calibrated on
    return [render_item(make_spec(rng, difficulty="easy", image_size=(900, 1400)), rng) for _ in range(count)]


def _same_words(expected: list[OcrToken], got: list[OcrToken]) -> int:
    """How many of ``expected``'s tokens ``got`` reads with the same text at about the same place."""
    def matches(a: OcrToken) -> bool:
        return any(a.text == b.text and max(abs(a.left - b.left), abs(a.top - b.top)) <= INT8_BOX_PX for b in got)

    return sum(map(matches, expected))


@needs_rapidocr
def test_the_int8_copy_is_built_once_and_found_again() -> None:
    first = int8.detector_copy("ppocrv6_small")
    built = first.stat().st_mtime_ns
    assert first.name == int8.copy_name("ppocrv6_small") and first.parent in model_cache.cache_dirs(int8.KIND)
    assert int8.find_copy("ppocrv6_small") == first
    assert int8.detector_copy("ppocrv6_small").stat().st_mtime_ns == built
    # Named by the source file and the recipe: another model set is another copy.
    assert int8.copy_name("ppocrv4") != first.name


@needs_rapidocr
def test_a_machine_without_the_copy_builds_it_where_it_can_write(tmp_path, monkeypatch, capsys) -> None:
    # What an executor without make's copies does: the first place cannot be created (its parent is a file),
    # so the copy is built in the next one, from the installed f32 file and the calibration renders.
    installed = int8.find_copy("ppocrv4")  # make's copy, when there is one
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    monkeypatch.setattr(model_cache, "cache_dirs", lambda kind: [blocked / kind, tmp_path / "cache"])
    built = int8.detector_copy("ppocrv4")
    assert built == tmp_path / "cache" / int8.copy_name("ppocrv4") and built.stat().st_size > 0
    assert "building the int8 copy of the ppocrv4 detector" in capsys.readouterr().err
    assert sorted(p.name for p in built.parent.iterdir() if not p.name.endswith(".lock")) == [built.name]
    # The same renders and the same file give the same copy: every worker of a machine reads alike.
    assert installed is None or installed.read_bytes() == built.read_bytes()


@needs_rapidocr
def test_the_engine_runs_the_int8_copy_on_the_cpu_and_reads_within_the_stated_tolerance() -> None:
    reference = get_engine(_rapid("f32"), IMAGING)
    engine = get_engine(_rapid("int8"), IMAGING)
    detector = engine.detector_session()._session
    assert detector._model_path == str(int8.find_copy("ppocrv6_small"))
    assert reference.detector_session()._session._model_path.endswith("det.onnx")
    without_vnni = has_int8_dot_product(cpu_flags()) is False
    same = total = 0
    for img in _renders(8):
        expected, got = reference.read(img), engine.read(img)
        same, total = same + _same_words(expected, got), total + len(expected)
        quantities = {t.text for t in expected if len(t.text) >= 3 and any(c.isdigit() for c in t.text)}
        assert quantities <= {t.text for t in got}, (expected, got)
    assert same / total >= (INT8_SAME_WORDS_WITHOUT_VNNI if without_vnni else INT8_SAME_WORDS), (same, total)
    assert _find(engine.read(_label_image()[0]), r"^500g$")
    assert reference.describe_device() == "CPUExecutionProvider"
    assert engine.describe_device() == "CPUExecutionProvider" + (f"({INT8_WITHOUT_VNNI})" if without_vnni else "")


@needs_rapidocr
def test_the_detectors_input_is_rapidocrs_own_bit_for_bit() -> None:
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    engine = get_engine(_rapid("f32"), IMAGING)
    rng = np.random.default_rng(3)
    for shape in ((961, 717, 3), (40, 1500, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        text_det = engine._ocr.text_det
        ours = text_det.get_preprocess(max(shape))(img)
        theirs = DetPreProcess(text_det.limit_side_len, text_det.limit_type, text_det.mean, text_det.std)(img)
        assert ours.dtype == theirs.dtype == np.float32
        assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_int8_settings_are_checked() -> None:
    config = load_config(overrides=["ocr.rapidocr.precision=int8"])
    assert reader_name(config.ocr, config.imaging) == "rapidocr:ppocrv6_small+fallback=ppocrv4@onnxruntime-int8 r2"
    assert int8.reader_sets(config.ocr) == ["ppocrv6_small", "ppocrv4"]
    with pytest.raises(ConfigError, match=r"ocr\.rapidocr\.precision=int8 needs ocr\.rapidocr\.runtime=onnxruntime"):
        load_config(overrides=["ocr.rapidocr.runtime=openvino", "ocr.rapidocr.precision=int8"])
    with pytest.raises(ConfigError, match=r"precision=int8 quantises the model sets' own detectors"):
        load_config(overrides=["ocr.rapidocr.precision=int8", "ocr.rapidocr.det_model_path=/tmp/det.onnx"])


def test_building_without_calibration_inputs_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="no calibration inputs"):
        int8.quantize_detector(int8.source_path("ppocrv6_small"), tmp_path / "x.onnx", [])


def test_the_build_command_exits_2_on_an_unknown_set(capsys) -> None:
    assert int8.main(["--sets", "ppocrv9"]) == 2
    assert "'ppocrv9' is not one of" in capsys.readouterr().err
