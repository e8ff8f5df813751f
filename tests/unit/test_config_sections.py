"""Settings sections other packages register with imagequant.config: each OCR engine declares its own
(``ocr.rapidocr.*``, ``ocr.tesseract.*``) beside its registry entry, and config.py imports no engine."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagequant import config as config_module
from imagequant.config import Checks, Config, OcrConfig, load_config, register_section, unregister_section
from imagequant.errors import ConfigError
from imagequant.ocr.settings import RapidOcrSettings, TesseractSettings
from imagequant.ocr.zoo import ENGINES, EngineEntry, register_engine, unregister_engine

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("onnxruntime", "rapidocr_onnxruntime", "PIL", "pytesseract", "tesserocr", "cv2", "numpy", "torch")


def _ocr_imports(path: Path) -> list[str]:
    """Every import of the imagequant.ocr package in a module, at any depth (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]  # importlib.import_module("imagequant.ocr...")
        found += [n for n in names if n == "imagequant.ocr" or n.startswith("imagequant.ocr.")]
    return found


def test_config_imports_nothing_from_the_ocr_package() -> None:
    assert _ocr_imports(REPO / "imagequant" / "config.py") == []
    assert _ocr_imports(REPO / "imagequant" / "ocr" / "zoo.py")  # the check sees the imports it looks for


def test_every_engine_reads_registered_sections_whose_defaults_validate() -> None:
    sections = {(s.parent, s.name): s for s in config_module.registered_sections()}
    for entry in ENGINES.values():
        assert entry.sections, f"{entry.name} reads no settings section"
        for name in entry.sections:
            section = sections[("ocr", name)]
            assert section.check is not None
            assert list(section.check(section.cls(), f"ocr.{name}", True)) == [], (entry.name, name)
        cfg = load_config(overrides=[f"ocr.engine={entry.name}"])
        assert all(dataclasses.is_dataclass(getattr(cfg.ocr, name)) for name in entry.sections)
    assert {e.name: e.sections for e in ENGINES.values()}["both"] == ("rapidocr", "tesseract")
    assert ENGINES["tesserocr"].sections == ("tesseract",)
    with pytest.raises(ConfigError, match="ocr.engine must be one of rapidocr, tesseract, both, tesserocr"):
        load_config(overrides=["ocr.engine=easyocr"])


def test_engine_sections_keep_their_keys_layout_and_pickling() -> None:
    cfg = load_config(overrides=["ocr.rapidocr.threads=2", "ocr.tesseract.psm=6"])
    assert (cfg.ocr.rapidocr.threads, cfg.ocr.tesseract.psm) == (2, 6)
    assert isinstance(cfg.ocr.rapidocr, RapidOcrSettings) and isinstance(cfg.ocr.tesseract, TesseractSettings)
    layout = cfg.to_dict()["ocr"]
    assert layout == dataclasses.asdict(cfg.ocr)
    assert layout["engine"] == cfg.ocr.engine
    assert layout["rapidocr"] == dataclasses.asdict(cfg.ocr.rapidocr) and layout["rapidocr"]["threads"] == 2
    assert layout["tesseract"]["psm"] == 6
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # what Spark ships to its workers
    assert pickle.loads(pickle.dumps(cfg)) != load_config()
    # the sections are dataclass fields like any other: constructor, replace, equality, defaults
    ocr = OcrConfig(engine="tesseract", tesseract=TesseractSettings(psm=7))
    assert ocr.tesseract.psm == 7 and ocr.rapidocr == RapidOcrSettings()
    assert dataclasses.replace(ocr, rapidocr=RapidOcrSettings(threads=3)).rapidocr.threads == 3
    assert ocr != OcrConfig(engine="tesseract")
    assert Config().ocr.tesseract == TesseractSettings()
    with pytest.raises(ConfigError, match=r"unknown setting ocr\.rapidocr\.xyz \(known: .*det_max_side"):
        load_config(overrides=["ocr.rapidocr.xyz=1"])
    with pytest.raises(ConfigError, match=r"ocr\.rapidocr\.threads must be >= 1"):
        load_config(overrides=["ocr.rapidocr.threads=0"])
    with pytest.raises(ConfigError, match=r"ocr\.tesseract\.psm must be an integer"):
        load_config(overrides=["ocr.tesseract.psm=six"])


def test_a_number_setting_takes_the_exponent_forms_yaml_leaves_as_text(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e3 and 1.0e3 as strings (its floats need a dot and a signed exponent).
    assert load_config(overrides=["fetch.read_timeout_s=1e3"]).fetch.read_timeout_s == 1000.0
    conf = tmp_path / "conf.yaml"
    conf.write_text("fetch:\n  read_timeout_s: 1.5e1\n  connect_timeout_s: ' 2.5 '\n")
    loaded = load_config([conf]).fetch
    assert (loaded.read_timeout_s, loaded.connect_timeout_s) == (15.0, 2.5)
    for text in ("inf", "nan", "-Infinity"):
        with pytest.raises(ConfigError, match=rf"fetch\.read_timeout_s must be a finite number, got '{text}'"):
            load_config(overrides=[f"fetch.read_timeout_s={text}"])
    with pytest.raises(ConfigError, match=r"fetch\.read_timeout_s must be a number, got '12 s'"):
        load_config(overrides=["fetch.read_timeout_s=12 s"])
    with pytest.raises(ConfigError, match=r"ocr\.tesseract\.psm must be an integer, got '1e1'"):
        load_config(overrides=["ocr.tesseract.psm=1e1"])  # an integer setting takes integers only


@dataclass
class ToySettings:
    letters: int = 3
    alphabet: str = "latin"
    model_file: str = ""


TOY_CHECKED: list[bool] = []  # in_use of each check call


def check_toy(settings: ToySettings, key: str, in_use: bool) -> list[str]:
    TOY_CHECKED.append(in_use)
    c = Checks()
    c.at_least(f"{key}.letters", settings.letters, 1)
    c.that(settings.alphabet in ("latin", "greek"), f"{key}.alphabet must be latin or greek")
    if in_use and settings.model_file:
        c.that(Path(settings.model_file).is_file(), f"{key}.model_file {settings.model_file} does not exist")
    return c.problems


@pytest.fixture
def toy_engine() -> Iterator[EngineEntry]:
    """A made-up engine with its own section, registered as the built-in ones are (never built here)."""
    entry = EngineEntry("toy", "tests.unit.test_config_sections:ToyEngine", "a made-up engine",
                        settings=ToySettings, section="toy", check=check_toy)
    register_engine(entry)
    TOY_CHECKED.clear()
    yield entry
    unregister_engine("toy")


def test_a_registered_engine_is_configured_and_checked_like_the_built_in_ones(
        toy_engine: EngineEntry, tmp_path: Path) -> None:
    cfg = load_config(overrides=["ocr.engine=toy", "ocr.toy.letters=5", "ocr.toy.alphabet=greek"])
    assert (cfg.ocr.engine, cfg.ocr.toy.letters, cfg.ocr.toy.alphabet) == ("toy", 5, "greek")
    assert cfg.to_dict()["ocr"]["toy"] == {"letters": 5, "alphabet": "greek", "model_file": ""}
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert load_config().ocr.toy == ToySettings()  # a section has its defaults without any YAML
    assert TOY_CHECKED[0] is True and TOY_CHECKED[-1] is False  # in use only where ocr.engine reads it
    with pytest.raises(ConfigError, match=r"ocr\.toy\.letters must be >= 1, got 0"):
        load_config(overrides=["ocr.toy.letters=0"])
    with pytest.raises(ConfigError, match=r"ocr\.toy\.alphabet must be latin or greek"):
        load_config(overrides=["ocr.engine=toy", "ocr.toy.alphabet=klingon"])
    with pytest.raises(ConfigError, match=r"ocr\.toy\.letters must be an integer"):
        load_config(overrides=["ocr.toy.letters=many"])
    with pytest.raises(ConfigError, match=r"unknown setting ocr\.toy\.colour \(known: alphabet, letters, model_file\)"):
        load_config(overrides=["ocr.toy.colour=red"])
    missing = tmp_path / "toy.onnx"
    with pytest.raises(ConfigError, match="model_file .* does not exist"):
        load_config(overrides=["ocr.engine=toy", f"ocr.toy.model_file={missing}"])
    assert load_config(overrides=["ocr.engine=tesseract", f"ocr.toy.model_file={missing}"])  # not in use
    conf = tmp_path / "toy.yaml"
    conf.write_text("ocr:\n  engine: toy\n  toy:\n    letters: 9\n", encoding="utf-8")
    assert load_config([conf]).ocr.toy.letters == 9


def test_an_unregistered_engine_leaves_no_trace(toy_engine: EngineEntry) -> None:
    unregister_engine("toy")
    assert "toy" not in {f.name for f in dataclasses.fields(OcrConfig)}
    assert not hasattr(OcrConfig(), "toy")
    with pytest.raises(ConfigError, match="unknown setting ocr.toy"):
        load_config(overrides=["ocr.toy.letters=2"])
    with pytest.raises(ConfigError, match="ocr.engine must be one of"):
        load_config(overrides=["ocr.engine=toy"])


def test_sections_are_refused_where_they_cannot_live() -> None:
    with pytest.raises(ValueError, match="setting of config.py itself"):
        register_section("ocr", "engine", ToySettings)
    with pytest.raises(ValueError, match="no settings group"):
        register_section("ocr.device", "toy", ToySettings)
    with pytest.raises(TypeError, match="must be a dataclass"):
        register_section("ocr", "toy", dict)
    with pytest.raises(ValueError, match="which no engine declares"):
        register_engine(EngineEntry("toy", "x:Y", "reads a missing section", also_reads=("nowhere",)))
    assert "toy" not in ENGINES
    unregister_section("ocr", "never_registered")  # a no-op


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fresh_interpreters_import_in_any_order_and_validate_without_an_engine() -> None:
    _fresh("import imagequant.config")
    _fresh("import imagequant.ocr.settings")
    out = _fresh("import sys\nfrom imagequant.config import load_config\n"
                 "cfg = load_config(overrides=['ocr.engine=both'])\n"
                 f"print(cfg.ocr.rapidocr.models, [m for m in {HEAVY!r} if m in sys.modules])")
    assert out.split(" ", 1)[1].strip() == "[]", out  # validation loaded no engine, image library or onnxruntime
    if importlib.util.find_spec("rapidocr_onnxruntime"):
        _fresh("from imagequant.ocr.rapidocr import RapidOcrEngine")
