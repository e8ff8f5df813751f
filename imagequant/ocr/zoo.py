"""The OCR engines by name: ``ocr.engine`` picks one of :data:`ENGINES`.

Adding an engine is one module with an :class:`imagequant.ocr.base.OcrEngine` subclass plus one entry
here; configuration validation, ``jobs/measure_ocr.py`` and the docs read this table. The table names
each engine's module, so reading it (as validation does) loads no engine and no image library.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagequant.config import ImagingConfig, OcrConfig
    from imagequant.ocr.base import OcrEngine


@dataclass(frozen=True)
class EngineEntry:
    name: str
    target: str  # "module:Class" of the OcrEngine subclass
    summary: str
    extra: str = ""  # the optional dependency group that installs it, when not installed by default
    onnxruntime: bool = False  # runs models on onnxruntime, where ocr.device places them

    def load(self) -> type[OcrEngine]:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


ENGINES: dict[str, EngineEntry] = {
    e.name: e
    for e in (
        EngineEntry("rapidocr", "imagequant.ocr.rapidocr:RapidOcrEngine",
                    "PP-OCRv4 detection + recognition on onnxruntime, in process (the default)", onnxruntime=True),
        EngineEntry("tesseract", "imagequant.ocr.tesseract:TesseractEngine",
                    "Tesseract through pytesseract, one process per pass"),
        EngineEntry("both", "imagequant.ocr.both:BothEngine",
                    "rapidocr and tesseract on the same image, tokens merged", onnxruntime=True),
        EngineEntry("tesserocr", "imagequant.ocr.tesserocr_engine:TesserocrEngine",
                    "Tesseract in process through tesserocr (optional dependency)", extra="tesserocr"),
    )
}
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)

_CACHE: dict[tuple[int, str], OcrEngine] = {}
_CACHE_LOCK = threading.Lock()


def build_engine(cfg: OcrConfig, imaging: ImagingConfig) -> OcrEngine:
    """A new engine of ``cfg.engine``."""
    from imagequant.ocr.base import OcrError

    entry = ENGINES.get(cfg.engine)
    if entry is None:
        raise OcrError("ocr_error", f"unknown OCR engine {cfg.engine!r} ({', '.join(ENGINE_NAMES)})")
    return entry.load()(cfg, imaging)


def get_engine(cfg: OcrConfig, imaging: ImagingConfig) -> OcrEngine:
    """The engine ``cfg.engine`` names, built once per (process, settings): model loading takes seconds."""
    key = (os.getpid(), json.dumps([dataclasses.asdict(cfg), dataclasses.asdict(imaging)], sort_keys=True))
    with _CACHE_LOCK:
        engine = _CACHE.get(key)
        if engine is None:
            engine = _CACHE[key] = build_engine(cfg, imaging)
    return engine


def check_device(cfg: OcrConfig) -> str:
    """Where ``ocr.device`` puts the configured engine's models in this process (``cpu`` or ``cuda:N``), without
    loading them; ConfigError when ``ocr.device=cuda`` cannot work here (no CUDA provider, no GPU). Jobs call it
    before any work where the engines will run on this machine."""
    from imagequant.devices import current_ocr_placement

    entry = ENGINES.get(cfg.engine)
    if entry is None or not entry.onnxruntime:
        return "cpu"  # Tesseract runs on the CPU whatever ocr.device says
    return current_ocr_placement(cfg.device).describe()
