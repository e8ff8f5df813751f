"""int8 copies of the PP-OCR detectors (``ocr.rapidocr.precision=int8``), quantised on this machine.

A detector's int8 copy is onnxruntime's static QDQ quantisation of the installed f32 file: int8 weights per
output channel, uint8 activations whose ranges were calibrated (MinMax, moving average) on the inputs the
f32 detector itself receives (default settings) when it reads :data:`CALIBRATION_IMAGES` synthetic renders
(:mod:`imagequant.synthetic`, seed :data:`CALIBRATION_SEED`), never on real catalog images. On a CPU with
VNNI the detector then costs about 0.6x; the recogniser and the direction classifier stay f32 (int8
recognition misreads characters: docs/ocr.md "Runtimes").

``make`` builds the copies of the default reader's sets (``python -m imagequant.ocr.int8``), and so does the
Docker image; a process that finds one missing builds it once (under a file lock, about a minute), so an
executor without them still runs. Each copy is named by its source file's hash and the recipe, so a new
model file or recipe gets a new copy. They live in :mod:`imagequant.model_cache`'s folders: the Python
environment's ``share/imagequant/int8``, else ``~/.cache/imagequant/int8``.

Building needs the ``onnx`` package (onnxruntime's quantisation tools); reading with a built copy does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imagequant import model_cache
from imagequant.errors import ConfigError
from imagequant.ocr import ppocr_models

if TYPE_CHECKING:
    from imagequant.config import OcrConfig

# Part of every copy's name: changing how copies are made must change this, so old copies are not reused.
RECIPE = "det-qdq-s8w-u8a-perchannel-minmax-avg-v1"
CALIBRATION_IMAGES = 40
CALIBRATION_SEED = 20261206
# The renders' smallest and largest side, px: the size of product photos.
CALIBRATION_SIDES = (1000, 2000)
# QDQ nodes need opset 13 (per-channel DequantizeLinear); older files are converted first.
_MIN_OPSET = 13
# The copies' folder in imagequant.model_cache.
KIND = "int8"


def source_path(set_name: str) -> Path:
    """The installed f32 detector file of a model set."""
    det = ppocr_models.resolve(set_name).det
    if det.path:
        return Path(det.path)
    import rapidocr_onnxruntime  # the v4 detector ships inside RapidOCR's wheel

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


def copy_name(set_name: str) -> str:
    digest = hashlib.sha256(source_path(set_name).read_bytes() + RECIPE.encode()).hexdigest()[:16]
    return f"{set_name}-det-int8-{digest}.onnx"


def find_copy(set_name: str) -> Path | None:
    return model_cache.find(KIND, copy_name(set_name))


def detector_copy(set_name: str) -> Path:
    """The int8 copy of ``set_name``'s detector, built first when this machine has none."""
    return model_cache.built_once(
        KIND, copy_name(set_name),
        lambda target: quantize_detector(source_path(set_name), target, calibration_inputs(set_name)),
        f"building the int8 copy of the {set_name} detector (calibrated on {CALIBRATION_IMAGES} synthetic renders)",
        "the int8 detector cannot be built; run `python -m imagequant.ocr.int8` where it can, or set "
        "ocr.rapidocr.precision=f32")


def calibration_inputs(set_name: str) -> list[np.ndarray]:
    """The f32 detector's inputs while the upright pass reads the calibration renders with the default
    settings (conf/default.yaml; the set's own files, on the CPU, without the second look), so a copy is the
    same whichever job's settings built it."""
    from imagequant.config import load_config
    from imagequant.ocr import rapidocr
    from imagequant.synthetic import make_spec, render_item

    defaults = load_config()
    rc = dataclasses.replace(defaults.ocr.rapidocr, models=set_name, det_models="", second_look_models="",
                             fallback_models="", det_model_path="", rec_model_path="", rec_keys_path="",
                             runtime="onnxruntime", precision="f32")
    settings = dataclasses.replace(defaults.ocr, engine="rapidocr", device="cpu", second_pass=False,
                                   rotated_pass=False, rapidocr=rc)
    cached = set(rapidocr._RAPID_MODELS)
    engine = rapidocr.RapidOcrEngine(settings, defaults.imaging)
    detector = engine.detector_session()
    detector.record_inputs = []
    try:
        rng = np.random.default_rng(CALIBRATION_SEED)
        for _ in range(CALIBRATION_IMAGES):
            engine.read_passes(render_item(make_spec(rng, image_size=CALIBRATION_SIDES), rng))
        return detector.record_inputs
    finally:
        detector.record_inputs = None
        for key in set(rapidocr._RAPID_MODELS) - cached:  # the f32 models were for this alone
            del rapidocr._RAPID_MODELS[key]


def quantize_detector(source: Path, target: Path, inputs: Sequence[np.ndarray]) -> None:
    """Writes ``source``'s static int8 (QDQ) quantisation to ``target``, calibrated on ``inputs``."""
    if not inputs:
        raise ValueError("no calibration inputs: the detector never ran")
    try:
        import onnx
        from onnx import version_converter
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise ConfigError(f"ocr.rapidocr.precision=int8 must build {target.name} and needs the onnx package for it "
                          f"({exc}): run make (or: pip install 'onnx>=1.17' 'ml_dtypes<0.6')") from exc

    model = onnx.load(str(source))
    input_name = model.graph.input[0].name

    class Feed(CalibrationDataReader):
        def __init__(self) -> None:
            self._left = iter(inputs)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self._left, None)
            return None if batch is None else {input_name: batch}

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < _MIN_OPSET:
        model = version_converter.convert_version(model, _MIN_OPSET)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as tmp:
        staged, prepared, quantized = (Path(tmp, n) for n in ("f32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, str(staged))
        quant_pre_process(str(staged), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), Feed(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options={"CalibMovingAverage": True})
        os.replace(quantized, target)  # whole or not at all: a reader never sees a half-written copy


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagequant.ocr.int8",
        description="Build the int8 detector copies that ocr.rapidocr.precision=int8 reads with (the sets of the "
                    "configured reader, or --sets); copies already built are kept.")
    parser.add_argument("--conf", action="append", default=[], metavar="FILE",
                        help="YAML configuration merged over conf/default.yaml (repeatable)")
    parser.add_argument("--sets", default="", help=f"comma-separated model sets ({', '.join(ppocr_models.MODEL_SETS)})"
                                                   "; default: those the configured reader uses")
    args = parser.parse_args(argv)
    from imagequant.config import load_config

    try:
        cfg = load_config(args.conf, [])
        sets = [s for s in args.sets.split(",") if s] or reader_sets(cfg.ocr)
        for name in sets:
            if name not in ppocr_models.MODEL_SETS:
                raise ConfigError(f"--sets: {name!r} is not one of {', '.join(ppocr_models.MODEL_SETS)}")
        for name in sets:
            found = find_copy(name)
            print(f"[int8] {name}: {found or detector_copy(name)}"
                  f"{' (already built)' if found else ''}", flush=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def reader_sets(ocr: OcrConfig) -> list[str]:
    """The model sets whose detectors a RapidOCR reader with these settings runs."""
    return list(dict.fromkeys(s for s in ppocr_models.detector_sets(ocr).values() if s))


if __name__ == "__main__":
    raise SystemExit(main())
