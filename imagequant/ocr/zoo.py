"""The OCR engines by name: ``ocr.engine`` picks one of :data:`ENGINES`.

Adding an engine is one module with an :class:`imagequant.ocr.base.OcrEngine` subclass plus one entry
here, which names its settings section (``ocr.<section>.*``, a dataclass with its checks, kept in a module
that loads no engine such as :mod:`imagequant.ocr.settings`); configuration validation,
``jobs/measure_ocr.py`` and the docs read this table. The table names each engine's module, so reading it
(as validation does) loads no engine and no image library.

Importing this module registers the sections and the engine names with :mod:`imagequant.config`, which
imports nothing from this package; ``imagequant/__init__.py`` imports it, so that is done before any
configuration loads.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagequant.config import (
    SectionCheck,
    register_choice,
    register_section,
    shipped_config,
    unregister_section,
)
from imagequant.ocr.ppocr_models import models_name
from imagequant.ocr.settings import RapidOcrSettings, TesseractSettings, check_rapidocr, check_tesseract

if TYPE_CHECKING:
    from imagequant.config import ImagingConfig, OcrConfig
    from imagequant.ocr.base import OcrEngine


@dataclass(frozen=True)
class EngineEntry:
    name: str
    target: str  # "module:Class" of the OcrEngine subclass
    summary: str  # one line for the --engine help of jobs/measure_ocr.py
    extra: str = ""  # the optional dependency group that installs it, when not installed by default
    onnxruntime: bool = False  # runs models on onnxruntime, where ocr.device places them
    settings: type | None = None  # the dataclass of the engine's own section, ocr.<section>.*
    section: str = ""
    check: SectionCheck | None = None  # the section's value checks (imagequant.config.SectionCheck)
    also_reads: tuple[str, ...] = ()  # other engines' sections it reads (``both`` runs two engines)

    def load(self) -> type[OcrEngine]:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)

    @property
    def sections(self) -> tuple[str, ...]:
        """Every section of ``ocr`` the engine reads: its own, then the ones it borrows."""
        return ((self.section,) if self.settings is not None else ()) + self.also_reads


ENGINES: dict[str, EngineEntry] = {
    e.name: e
    for e in (
        EngineEntry("rapidocr", "imagequant.ocr.rapidocr:RapidOcrEngine",
                    "PP-OCR detection + recognition on onnxruntime, in process, models from ocr.rapidocr.models "
                    "(the default)", onnxruntime=True,
                    settings=RapidOcrSettings, section="rapidocr", check=check_rapidocr),
        EngineEntry("tesseract", "imagequant.ocr.tesseract:TesseractEngine",
                    "Tesseract through pytesseract, one process per pass",
                    settings=TesseractSettings, section="tesseract", check=check_tesseract),
        EngineEntry("both", "imagequant.ocr.both:BothEngine",
                    "rapidocr and tesseract on the same image, tokens merged", onnxruntime=True,
                    also_reads=("rapidocr", "tesseract")),
        EngineEntry("tesserocr", "imagequant.ocr.tesserocr_engine:TesserocrEngine",
                    "Tesseract in process through tesserocr (optional dependency)", extra="tesserocr",
                    also_reads=("tesseract",)),
    )
}
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)


def _register_with_config() -> None:
    """Tells imagequant.config the engines' sections and names: it imports nothing from this package (the
    engine modules import it), so the table is handed to it."""
    global ENGINE_NAMES
    ENGINE_NAMES = tuple(ENGINES)
    for entry in ENGINES.values():
        if entry.settings is not None:
            register_section("ocr", entry.section, entry.settings, entry.check)
    register_choice("ocr.engine", {e.name: e.sections for e in ENGINES.values()})


def _check_sections(entries: list[EngineEntry]) -> None:
    """ValueError for an engine reading a section no engine declares: its settings would not exist."""
    declared = {e.section for e in entries if e.settings is not None}
    for entry in entries:
        missing = set(entry.sections) - declared
        if missing:
            raise ValueError(f"OCR engine {entry.name} reads {', '.join(sorted(missing))}, which no engine declares")


def register_engine(entry: EngineEntry) -> None:
    """Adds an engine (and its settings section) beside the built-in ones: a plugin's, or a test's."""
    _check_sections([*(e for e in ENGINES.values() if e.name != entry.name), entry])
    ENGINES[entry.name] = entry
    _register_with_config()


def unregister_engine(name: str) -> None:
    """Removes an engine :func:`register_engine` added, with its section."""
    _check_sections([e for e in ENGINES.values() if e.name != name])
    entry = ENGINES.pop(name, None)
    if entry is not None and entry.settings is not None:
        unregister_section("ocr", entry.section)
    _register_with_config()


_check_sections(list(ENGINES.values()))
_register_with_config()


def reading_settings(ocr: OcrConfig, imaging: ImagingConfig) -> dict[str, Any]:
    """The settings that decide what ``ocr.engine`` reads in an image, by key (``second_pass``,
    ``rapidocr.det_max_side``, ``imaging.ocr_max_side``): ``ocr``'s own, the sections its engine reads, and the
    sizes of the image the OCR is given; not those marked ``NOT_A_READING_SETTING`` in their dataclass."""
    sections = {e.section for e in ENGINES.values() if e.settings is not None}
    found = _reading_fields(ocr, "", skip=sections)
    for section in ENGINES[ocr.engine].sections:
        found.update(_reading_fields(getattr(ocr, section), f"{section}."))
    found.update(_reading_fields(imaging, "imaging."))
    return found


def _reading_fields(settings: Any, prefix: str, skip: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    return {prefix + f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
            if f.metadata.get("reading", True) and f.name not in skip}


def changed_reading_settings(ocr: OcrConfig, imaging: ImagingConfig) -> str:
    """The reading settings whose values differ from conf/default.yaml's, as ``key=value`` text
    (``rapidocr.det_max_side=1280, second_pass=false``); "" when the engine reads with the shipped ones."""
    shipped = shipped_config()
    here = reading_settings(ocr, imaging)
    default = reading_settings(dataclasses.replace(shipped.ocr, engine=ocr.engine), shipped.imaging)
    return ", ".join(f"{key}={_setting_text(value)}" for key, value in sorted(here.items())
                     if value != default.get(key))


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_setting_text(v) for v in value) + "]"
    return str(value)


# The revision of what the engines read: raised with every change of the reading code, or of conf/default.yaml's
# reading settings, that alters what some image reads as (a pass's tokens, which passes run). The reader's name
# carries it, so a store's records read by another revision count as made otherwise; names without one (r1) were
# written by versions that did not record it (up to 2026-12-07).
READING_REVISION = 2


def reader_name(ocr: OcrConfig, imaging: ImagingConfig) -> str:
    """What read an image, as the store's ``ocr_engine`` column records it: the engine, for RapidOCR its models
    (``rapidocr:ppocrv6_small+fallback=ppocrv4``), the reading revision (``r2``, :data:`READING_REVISION`), then
    in brackets the reading settings that differ from the shipped ones (``rapidocr:ppocrv6_small+fallback=ppocrv4
    r2 (rapidocr.det_max_side=1280)``). Images whose records name another reader were read otherwise; extract
    counts them (imagequant/spark/extract.py)."""
    models = models_name(ocr)
    name = f"{ocr.engine}:{models}" if models else ocr.engine
    name += f" r{READING_REVISION}"
    changed = changed_reading_settings(ocr, imaging)
    return f"{name} ({changed})" if changed else name


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
