"""The settings sections of the OCR engines (``ocr.rapidocr.*``, ``ocr.tesseract.*``) and their checks.

Each section is named by its engine's entry in :mod:`imagequant.ocr.zoo`, which registers it with
:func:`imagequant.config.register_section`; conf/default.yaml documents every key. Validation reads this
module, so it imports no engine, image library or onnxruntime (:mod:`ppocr_models` only looks for files).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field

from imagequant.config import NOT_A_READING_SETTING, Checks
from imagequant.errors import ConfigError
from imagequant.ocr import ppocr_models

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16", "int8")


@dataclass
class TesseractSettings:
    psm: int = 11
    extra_psm: list[int] = field(default_factory=list)
    oem: int = 1
    lang: str = "eng"
    extra_args: str = ""
    thread_limit: int = field(default=1, metadata=NOT_A_READING_SETTING)
    preprocess: str = "gray"


@dataclass
class RapidOcrSettings:
    threads: int = field(default=1, metadata=NOT_A_READING_SETTING)
    text_score: float = 0.3
    use_angle_cls: bool = True
    det_max_side: int = 960
    det_upscale: float = 1.0
    min_side: int = 0
    memory_arena: bool = field(default=True, metadata=NOT_A_READING_SETTING)
    # What runs the models on the CPU: onnxruntime | openvino (imagequant/ocr/rapidocr.py); a GPU is always
    # onnxruntime's. This and the model sets below are in the reader's name (ppocr_models.models_name).
    runtime: str = field(default="onnxruntime", metadata=NOT_A_READING_SETTING)
    # f32 | bf16 (openvino, where the CPU computes bf16 natively, else f32) | int8 (onnxruntime: the detectors'
    # int8 copies, imagequant/ocr/int8.py)
    precision: str = field(default="f32", metadata=NOT_A_READING_SETTING)
    rotated_pass: bool = False
    # recognise again, in the second look's detail and rotated passes, the lines the first reader has read
    # already (false: only those it read with confidence below 90)
    reread_lines: bool = False
    # text lines per recognition (and direction classifier) model call: a line reads the same in any batch
    rec_batch_lines: int = field(default=6, metadata=NOT_A_READING_SETTING)
    # Which PP-OCR models read (imagequant/ocr/ppocr_models.py): ppocrv4 | ppocrv6_small | ppocrv6_tiny
    models: str = field(default="ppocrv4", metadata=NOT_A_READING_SETTING)
    # the detector of another set ("": that of ``models``)
    det_models: str = field(default="", metadata=NOT_A_READING_SETTING)
    # the set the second look reads with ("": ``models``)
    second_look_models: str = field(default="", metadata=NOT_A_READING_SETTING)
    # a set whose second look follows the first reader's where that one still found no plausible candidate
    fallback_models: str = field(default="", metadata=NOT_A_READING_SETTING)
    det_model_path: str = ""  # a user's own PP-OCR ONNX files, replacing the chosen set's
    rec_model_path: str = ""
    rec_keys_path: str = ""


def check_tesseract(tc: TesseractSettings, key: str, in_use: bool) -> list[str]:
    """The values Tesseract cannot run with, checked whichever engine is chosen (a typo is never kept)."""
    c = Checks()
    c.between(f"{key}.oem", tc.oem, 0, 3)
    c.at_least(f"{key}.thread_limit", tc.thread_limit, 1)
    c.that(bool(tc.lang.strip()), f"{key}.lang must name a language pack, e.g. eng")
    c.that(tc.preprocess in ("none", "gray", "autocontrast"), f"{key}.preprocess must be none, gray or autocontrast")
    c.that(0 <= tc.psm <= 13 and all(0 <= p <= 13 for p in tc.extra_psm),
           f"{key}.psm and extra_psm must be page segmentation modes 0-13")
    return c.problems


def check_rapidocr(rc: RapidOcrSettings, key: str, in_use: bool) -> list[str]:
    """The values RapidOCR cannot run with; where it reads (``in_use``), a chosen model file that is not
    installed too (ConfigError): one clear line before any work, not an error per image."""
    c = Checks()
    c.between(f"{key}.text_score", rc.text_score, 0, 1)
    c.at_least(f"{key}.rec_batch_lines", rc.rec_batch_lines, 1)
    c.that(math.isfinite(rc.det_upscale), f"{key}.det_upscale must be a finite number, got {rc.det_upscale!r}")
    c.that(rc.threads >= 1, f"{key}.threads must be >= 1")
    c.that(rc.det_max_side == 0 or rc.det_max_side >= 320, f"{key}.det_max_side must be 0 (full size) or >= 320")
    c.that(rc.min_side >= 0, f"{key}.min_side must be >= 0")
    c.that(1.0 <= rc.det_upscale <= 4.0, f"{key}.det_upscale must be between 1 and 4")
    c.that(rc.runtime in RUNTIMES, f"{key}.runtime must be one of {', '.join(RUNTIMES)}, got {rc.runtime!r}")
    c.that(rc.precision in PRECISIONS, f"{key}.precision must be one of {', '.join(PRECISIONS)}, got {rc.precision!r}")
    c.that(rc.precision != "bf16" or rc.runtime == "openvino",
           f"{key}.precision=bf16 needs {key}.runtime=openvino (onnxruntime has no bf16 CPU kernels)")
    c.that(rc.precision != "int8" or rc.runtime == "onnxruntime",
           f"{key}.precision=int8 needs {key}.runtime=onnxruntime (it runs the detectors' int8 copies)")
    c.that(rc.precision != "int8" or not rc.det_model_path,
           f"{key}.precision=int8 quantises the model sets' own detectors, not {key}.det_model_path: quantise "
           "your file yourself and keep precision=f32")
    problem = ppocr_models.check_names(rc.models, rc.det_models, rc.second_look_models, rc.fallback_models)
    if problem:
        c.problems.append(problem)
    if in_use and not c.problems:
        ppocr_models.resolve(rc.models, rc.det_models, rc.det_model_path, rc.rec_model_path, rc.rec_keys_path)
        for extra in {rc.second_look_models, rc.fallback_models} - {""}:
            ppocr_models.resolve(extra)
        if rc.runtime == "openvino" and importlib.util.find_spec("openvino") is None:
            raise ConfigError(f"{key}.runtime=openvino needs the openvino package, which is not installed: run make "
                              "(or: pip install openvino==2026.4.1)")
    return c.problems
