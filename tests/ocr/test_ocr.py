"""OCR engines on synthetic images drawn here: Tesseract, RapidOCR, both merged, timeouts, rotated text."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from imagequant.config import ImagingConfig, OcrConfig
from imagequant.core.tokens import OcrToken, box_overlap, rotate_box_back
from imagequant.ocr.base import Deadline, OcrError
from imagequant.ocr.merging import (
    add_rotated_tokens,
    incomplete_mentions,
    merge_tokens,
    similar_text,
    split_glued_tokens,
    split_line_words,
)
from imagequant.ocr.settings import TesseractSettings
from imagequant.ocr.tesseract import parse_tesseract_data
from imagequant.ocr.zoo import get_engine

_MPL = importlib.util.find_spec("matplotlib")
FONT_PATH = Path(_MPL.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf" if _MPL and _MPL.origin else None

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary not installed")

try:
    import rapidocr_onnxruntime  # noqa: F401

    _RAPID_SKIP = ""
except Exception as exc:  # noqa: BLE001 - any import failure means the engine cannot run here
    _RAPID_SKIP = f"rapidocr_onnxruntime cannot be imported: {exc!r}"
needs_rapidocr = pytest.mark.skipif(bool(_RAPID_SKIP), reason=_RAPID_SKIP or "n/a")

# The drawn text is large already; no enlargement keeps the tests quick.
IMAGING = ImagingConfig(ocr_min_side=300)


def _font(size: int) -> ImageFont.FreeTypeFont:
    if FONT_PATH is None or not FONT_PATH.exists():
        pytest.skip("matplotlib's DejaVu font is not available")
    return ImageFont.truetype(str(FONT_PATH), size)


def _label_image() -> tuple[Image.Image, dict[str, tuple[int, int, int, int]]]:
    """A white 'label' with two lines of large text; returns the image and each line's drawn box (l, t, r, b)."""
    img = Image.new("RGB", (900, 360), "white")
    draw = ImageDraw.Draw(img)
    font = _font(64)
    boxes = {}
    for text, xy in (("Net Wt 500g", (60, 60)), ("12V DC", (60, 210))):
        draw.text(xy, text, fill="black", font=font)
        boxes[text] = draw.textbbox(xy, text, font=font)
    return img, boxes


def _cfg(engine: str, **changes: object) -> OcrConfig:
    base = OcrConfig(engine=engine, rotated_pass=False, second_pass=False, timeout_s=30.0)
    return dataclasses.replace(base, **changes)


def _inside(t: OcrToken, box: tuple[int, int, int, int], slack: int = 12) -> bool:
    return (
        t.left >= box[0] - slack and t.top >= box[1] - slack
        and t.left + t.width <= box[2] + slack and t.top + t.height <= box[3] + slack
    )


def _find(tokens: list[OcrToken], pattern: str) -> list[OcrToken]:
    return [t for t in tokens if re.search(pattern, t.text, re.IGNORECASE)]


def _check_label_tokens(tokens: list[OcrToken], boxes: dict[str, tuple[int, int, int, int]]) -> None:
    weight = _find(tokens, r"^500g$")
    assert weight, [t.text for t in tokens]
    assert _inside(weight[0], boxes["Net Wt 500g"])
    # The value token sits at the right end of its line, about a third of the line's width.
    line_box = boxes["Net Wt 500g"]
    assert weight[0].left > line_box[0] + (line_box[2] - line_box[0]) * 0.5
    assert weight[0].height > 30
    volt = _find(tokens, r"^12V$")
    assert volt and _inside(volt[0], boxes["12V DC"])
    assert all(0 <= t.conf <= 100 for t in tokens)
    # Line ids are unique per image: the two printed lines have different ids.
    assert weight[0].line != volt[0].line
    assert weight[0].word > volt[0].word or weight[0].line != volt[0].line


@needs_tesseract
def test_tesseract_reads_values_with_sane_boxes() -> None:
    img, boxes = _label_image()
    engine = get_engine(_cfg("tesseract"), IMAGING)
    assert engine.name == "tesseract"
    tokens = engine.read(img)
    _check_label_tokens(tokens, boxes)
    assert all(t.angle == 0 for t in tokens)


@needs_tesseract
def test_tesseract_extra_page_segmentation_merged_without_duplicates() -> None:
    img, boxes = _label_image()
    cfg = _cfg("tesseract", tesseract=dataclasses.replace(OcrConfig().tesseract, extra_psm=[6]))
    tokens = get_engine(cfg, IMAGING).read(img)
    _check_label_tokens(tokens, boxes)
    assert len(_find(tokens, r"^500g$")) == 1
    assert len(_find(tokens, r"^12V$")) == 1


@needs_tesseract
def test_tesseract_boxes_map_back_from_upscaled_image() -> None:
    # A small image is enlarged before Tesseract; boxes must come back in the original's pixels.
    img, boxes = _label_image()
    small = img.resize((450, 180), Image.Resampling.LANCZOS)
    # Short side 180 -> 360 (2x, the long side cap of 900 stops it there).
    tokens = get_engine(_cfg("tesseract"), ImagingConfig(ocr_min_side=500, ocr_max_side=900)).read(small)
    weight = _find(tokens, r"^500g$")
    assert weight
    half = tuple(v // 2 for v in boxes["Net Wt 500g"])
    assert _inside(weight[0], half, slack=8)


@needs_rapidocr
def test_rapidocr_reads_values_with_sane_boxes() -> None:
    img, boxes = _label_image()
    engine = get_engine(_cfg("rapidocr"), IMAGING)
    assert engine.name == "rapidocr"
    tokens = engine.read(img)
    _check_label_tokens(tokens, boxes)
    # Words of a line share its line id and are numbered left to right.
    line = [t for t in tokens if t.line == _find(tokens, r"^500g$")[0].line]
    assert [t.text for t in sorted(line, key=lambda t: t.word)] == ["Net", "Wt", "500g"]
    assert [t.left for t in sorted(line, key=lambda t: t.word)] == sorted(t.left for t in line)


@needs_rapidocr
def test_rapidocr_enlarged_detection_finds_small_print_in_image_pixels() -> None:
    # 8 px print on a small image: at its own size the detector's box is too coarse to read the line
    img = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(img)
    draw.text((60, 60), "KOSA Spot Light", fill="black", font=_font(40))
    small_xy = (200, 200)
    draw.text(small_xy, "Output power 2200 watts", fill="black", font=_font(8))
    small_box = draw.textbbox(small_xy, "Output power 2200 watts", font=_font(8))
    plain = get_engine(_cfg("rapidocr"), IMAGING).read(img)
    enlarging_cfg = _cfg("rapidocr")
    enlarging_cfg.rapidocr = dataclasses.replace(enlarging_cfg.rapidocr, det_upscale=2.0, det_max_side=1280)
    enlarging = get_engine(enlarging_cfg, IMAGING)
    enlarged = enlarging.read(img)
    assert not _find(plain, r"^2200$"), [t.text for t in plain]
    watts = _find(enlarged, r"^2200$")
    assert watts and _inside(watts[0], small_box, slack=6), [(t.text, t.left, t.top) for t in enlarged]
    # the large line keeps its boxes in the original image's pixels
    label, boxes = _label_image()
    _check_label_tokens(enlarging.read(label), boxes)


def _config_entry(options: Any, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # onnxruntime's answer for a key never set
        return None


@needs_rapidocr
def test_rapidocr_memory_arena_setting_reaches_its_sessions() -> None:
    # The arena changes only where buffers live: both settings read the same words, boxes and confidences.
    img, boxes = _label_image()
    read = {}
    for arena in (True, False):
        cfg = _cfg("rapidocr", rapidocr=dataclasses.replace(OcrConfig().rapidocr, memory_arena=arena))
        engine = get_engine(cfg, IMAGING)
        options = [s.get_session_options() for s in engine._sessions]
        assert all(o.enable_cpu_mem_arena is arena for o in options)
        # no memory pattern on the CPU: its per-shape block would sit beside the arena's chunks
        assert not any(o.enable_mem_pattern for o in options)
        # with the arena on, every CPU session of the process (both readers') shares one
        assert all(_config_entry(o, "session.use_env_allocators") == ("1" if arena else None) for o in options)
        read[arena] = engine.read(img)
    assert read[True] == read[False]


@needs_rapidocr
@needs_tesseract
def test_both_engines_merged_without_duplicates() -> None:
    img, boxes = _label_image()
    engine = get_engine(_cfg("both"), IMAGING)
    assert engine.name == "both"
    tokens = engine.read(img)
    _check_label_tokens(tokens, boxes)
    assert len(_find(tokens, r"^500g$")) == 1
    assert len(_find(tokens, r"^12V$")) == 1


def _tok(text: str, conf: float, box: tuple[int, int, int, int], line: int = 0, word: int = 0) -> OcrToken:
    return OcrToken(text, conf, box[0], box[1], box[2], box[3], block=0, line=line, word=word)


def test_merge_keeps_higher_confidence_duplicate_in_primary_line() -> None:
    primary = [
        _tok("Net", 95, (10, 10, 60, 30), line=0, word=0),
        _tok("500", 60, (80, 10, 70, 30), line=0, word=1),
        _tok("DC", 90, (10, 60, 40, 30), line=1, word=0),
    ]
    secondary = [
        _tok("500g", 92, (82, 11, 90, 30), line=0, word=0),  # same place, similar text, higher conf
        _tok("Net", 40, (11, 10, 58, 31), line=0, word=1),  # duplicate with lower conf: dropped
        _tok("12V", 88, (300, 60, 50, 30), line=3, word=0),  # elsewhere: added
        _tok("XYZ", 99, (10, 60, 40, 30), line=4, word=0),  # same place as "DC" but different text: kept
    ]
    merged = merge_tokens(primary, secondary)
    texts = [t.text for t in merged]
    assert texts.count("Net") == 1 and "500" not in texts and "500g" in texts
    assert "12V" in texts and "XYZ" in texts and "DC" in texts
    net = next(t for t in merged if t.text == "Net")
    assert net.conf == 95
    g = next(t for t in merged if t.text == "500g")
    assert g.line == net.line and g.word == net.word + 1  # took the replaced token's place
    lines = {t.line for t in merged}
    assert len({(t.line, t.word) for t in merged}) == len(merged)
    assert next(t for t in merged if t.text == "12V").line not in {net.line}
    assert lines == set(range(len(lines)))


def test_overlap_and_similarity_helpers() -> None:
    assert box_overlap((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_overlap((0, 0, 10, 10), (20, 0, 10, 10)) == 0.0
    assert box_overlap((0, 0, 100, 20), (10, 5, 10, 10)) == 1.0  # small box inside a big one
    assert similar_text("500g", "500 g") and similar_text("Net Wt.", "NetWt")
    assert not similar_text("500g", "DC")


def test_parse_tesseract_data_drops_empty_and_layout_rows() -> None:
    data = {
        "level": [1, 5, 5, 5, 5, 5],
        "block_num": [0, 1, 1, 1, 2, 2],
        "par_num": [0, 1, 1, 1, 1, 1],
        "line_num": [0, 1, 1, 1, 1, 1],
        "word_num": [0, 1, 2, 3, 1, 2],
        "left": [0, 10, 50, 90, 10, 60],
        "top": [0, 5, 5, 5, 40, 40],
        "width": [200, 30, 30, 30, 40, 30],
        "height": [100, 20, 20, 20, 20, 20],
        "conf": [-1, 96, 91, 30, 88, 77],
        "text": ["", "Net", " ", "500g", "12V", "DC"],
    }
    tokens = parse_tesseract_data(data)
    assert [t.text for t in tokens] == ["Net", "500g", "12V", "DC"]
    # Block 1 line 1 and block 2 line 1 are different lines of the image.
    assert tokens[0].line == tokens[1].line != tokens[2].line == tokens[3].line
    assert [t.word for t in tokens] == [0, 1, 0, 1]
    assert tokens[2].block == 2 and tokens[1].conf == 30.0


def test_rotate_box_back_finds_the_original_pixels() -> None:
    arr = np.zeros((60, 100), dtype=np.uint8)
    arr[10:20, 70:95] = 255  # a bright box at left=70, top=10, w=25, h=10
    img = Image.fromarray(arr)
    for angle, transpose in ((90, Image.Transpose.ROTATE_90), (270, Image.Transpose.ROTATE_270)):
        rot = np.asarray(img.transpose(transpose))
        ys, xs = np.nonzero(rot)
        box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        assert rotate_box_back(box, angle, (rot.shape[1], rot.shape[0])) == (70, 10, 25, 10)
        # and the other way (the rotated passes' lines read already): the box of img in the turned image
        assert rotate_box_back((70, 10, 25, 10), (360 - angle) % 360, img.size) == box


def test_split_line_words_separates_words_glued_by_recognition() -> None:
    assert [w for w, _, _ in split_line_words("Weighs235grams")] == ["Weighs", "235grams"]
    assert [w for w, _, _ in split_line_words("Net Wt 500g")] == ["Net", "Wt", "500g"]
    assert [w for w, _, _ in split_line_words("12V DC", split_letter_digit=False)] == ["12V", "DC"]
    assert split_line_words("ab 12") == [("ab", 0, 2), ("12", 3, 5)]
    # A period after letters ends an abbreviation; it must not turn "180G" into ".180G".
    assert [w for w, _, _ in split_line_words("NETWT.180G")] == ["NETWT.", "180G"]
    assert [w for w, _, _ in split_line_words("2.82oz/80g")] == ["2.82oz/", "80g"]
    for keep in ("1/2in", "12V", "A4", "2.82oz", "100-240V"):
        assert [w for w, _, _ in split_line_words(keep)] == [keep]


def test_split_glued_tokens_divides_the_box_by_characters() -> None:
    t = OcrToken("NETWT.180G", 90, 100, 10, 100, 20, block=1, line=3, word=2)
    a, b = split_glued_tokens([t])
    assert (a.text, a.left, a.width) == ("NETWT.", 100, 60)
    assert (b.text, b.left, b.width, b.top, b.height) == ("180G", 160, 40, 10, 20)
    assert a.line == b.line == 3 and a.word == b.word == 2
    # Text reading bottom to top (angle 270): the first word is at the bottom of the box.
    v = dataclasses.replace(t, left=5, top=0, width=20, height=100, angle=270)
    first, second = split_glued_tokens([v])
    assert first.text == "NETWT." and first.top == 40 and first.height == 60
    assert second.top == 0 and second.height == 40
    assert split_glued_tokens([dataclasses.replace(t, text="500g")])[0].text == "500g"


def test_incomplete_mentions_finds_numbers_without_units() -> None:
    tokens = [
        _tok("Net", 90, (0, 0, 10, 10), line=0, word=0),
        _tok("500", 90, (20, 0, 10, 10), line=0, word=1),  # bare number
        _tok("200", 90, (0, 20, 10, 10), line=1, word=0),
        _tok("ml", 90, (20, 20, 10, 10), line=1, word=1),  # complete
        _tok("12V", 90, (0, 40, 10, 10), line=2, word=0),  # complete
        _tok("kg", 90, (0, 60, 10, 10), line=3, word=0),  # unit without number
        _tok("5901234123457", 90, (0, 80, 10, 10), line=4, word=0),  # barcode: not a quantity
    ]
    assert [t.text for t in incomplete_mentions(tokens)] == ["500", "kg"]


def test_rotated_lines_added_only_with_digits_and_not_twice() -> None:
    upright = [_tok("Height", 90, (0, 0, 50, 10)), _tok("30cm", 90, (100, 100, 40, 12), line=1)]
    rotated = [
        dataclasses.replace(_tok("150", 80, (5, 40, 12, 30), line=5), angle=270),
        dataclasses.replace(_tok("cm", 80, (5, 70, 12, 20), line=5, word=1), angle=270),  # the digit line's unit
        dataclasses.replace(_tok("word", 80, (30, 40, 12, 50), line=6), angle=270),  # a line without digits
        dataclasses.replace(_tok("30cm", 50, (101, 100, 40, 12), line=7), angle=90),  # already read upright
    ]
    out = add_rotated_tokens(upright, rotated)
    assert [t.text for t in out] == ["Height", "30cm", "150", "cm"]
    assert out[2].angle == 270 and out[2].line not in (0, 1) and out[2].line == out[3].line


@needs_tesseract
def test_second_pass_completes_a_number_missing_its_unit() -> None:
    img = Image.new("RGB", (900, 200), "white")
    draw = ImageDraw.Draw(img)
    font = _font(44)
    draw.text((40, 70), "Net Wt 500 g", fill="black", font=font)
    left = 40 + int(draw.textlength("Net Wt ", font=font))
    x0, t, r, b = draw.textbbox((left, 70), "500", font=font)
    # A first pass that read the number but lost its unit (as happens with small or stylised print).
    first = [
        _tok("Net", 90, (40, t, 70, b - t), line=0, word=0),
        _tok("Wt", 90, (120, t, 50, b - t), line=0, word=1),
        _tok("500", 90, (x0, t, r - x0, b - t), line=0, word=2),
    ]
    assert [x.text for x in incomplete_mentions(first)] == ["500"]
    engine = get_engine(_cfg("tesseract", second_pass=True), IMAGING)
    out = engine.reread_incomplete(img, first)
    text = " ".join(x.text for x in out)
    assert re.search(r"500 ?g\b", text), text
    assert len(_find(out, r"^500")) == 1  # replaced, not duplicated
    value = _find(out, r"^500")[0]
    assert abs(value.left - x0) <= 10 and abs(value.top - t) <= 10  # mapped back to image pixels


def _rotated_text_image() -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Horizontal 'Height' plus '150cm' printed vertically (reading bottom to top), as on dimension drawings."""
    img = Image.new("RGB", (700, 700), "white")
    draw = ImageDraw.Draw(img)
    draw.text((220, 40), "Height", fill="black", font=_font(56))
    strip = Image.new("RGB", (360, 110), "white")
    ImageDraw.Draw(strip).text((20, 15), "150cm", fill="black", font=_font(72))
    vertical = strip.rotate(90, expand=True)  # CCW: the text now reads bottom to top
    img.paste(vertical, (60, 200))
    return img, (60, 200, 60 + vertical.width, 200 + vertical.height)


@needs_tesseract
def test_rotated_pass_reads_vertical_text() -> None:
    img, region = _rotated_text_image()
    plain = get_engine(_cfg("tesseract"), IMAGING).read(img)
    assert not _find(plain, r"150")
    tokens = get_engine(_cfg("tesseract", rotated_pass=True), IMAGING).read(img)
    found = _find(tokens, r"^150cm$")
    assert found, [t.text for t in tokens]
    assert found[0].angle == 270  # rotating the image 270 degrees CCW (90 clockwise) makes it upright
    assert _inside(found[0], region, slack=15)
    assert found[0].height > found[0].width  # a vertical box in the original image
    assert _find(tokens, r"^Height$")[0].angle == 0


@needs_rapidocr
def test_rapidocr_reads_vertical_lines_itself() -> None:
    img, region = _rotated_text_image()
    tokens = get_engine(_cfg("rapidocr"), IMAGING).read(img)
    found = _find(tokens, r"150")
    assert found, [t.text for t in tokens]
    assert found[0].angle in (90, 270) and _inside(found[0], region, slack=15)


@needs_tesseract
def test_tesseract_timeout_is_an_ocr_timeout() -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (1500, 1500, 3), dtype=np.uint8))
    engine = get_engine(_cfg("tesseract", timeout_s=0.05), IMAGING)
    with pytest.raises(OcrError) as info:
        engine.read(noisy)
    assert info.value.kind == "ocr_timeout"


@needs_rapidocr
def test_rapidocr_watchdog_timeout_is_an_ocr_timeout() -> None:
    img, _ = _label_image()
    big = img.resize((1800, 720))
    engine = get_engine(_cfg("rapidocr", timeout_s=0.2), IMAGING)
    with pytest.raises(OcrError) as info:
        engine.read(big)
    assert info.value.kind == "ocr_timeout"
    # The engine stays usable after a terminated run.
    ok = get_engine(_cfg("rapidocr", timeout_s=30.0), IMAGING).read(img)
    assert _find(ok, r"^500g$")


def test_missing_tesseract_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    cfg = _cfg("tesseract", tesseract=TesseractSettings(psm=7))  # a setting no other test caches
    with pytest.raises(OcrError) as info:
        get_engine(cfg, IMAGING)
    assert info.value.kind == "ocr_error" and "apt-get install tesseract-ocr" in str(info.value)


@needs_tesseract
def test_engine_cached_per_settings() -> None:
    a = get_engine(_cfg("tesseract"), IMAGING)
    assert get_engine(_cfg("tesseract"), IMAGING) is a
    assert get_engine(_cfg("tesseract", timeout_s=5.0), IMAGING) is not a


def test_unknown_engine_and_error_kinds() -> None:
    with pytest.raises(OcrError):
        get_engine(_cfg("paddle"), IMAGING)
    with pytest.raises(ValueError):
        OcrError("bad_kind", "x")


def test_token_dict_round_trip() -> None:
    t = OcrToken("500g", 91.5, 1, 2, 3, 4, block=1, line=2, word=3, angle=90)
    assert OcrToken.from_dict(t.to_dict()) == t
    assert OcrToken.from_dict({**t.to_dict(), "extra": 1}) == t


def test_engine_knobs_are_typed_configuration_keys() -> None:
    from imagequant.config import load_config
    from imagequant.errors import ConfigError

    cfg = load_config(overrides=["ocr.rapidocr.det_max_side=960", "ocr.rapidocr.min_side=700",
                                 "ocr.second_pass_text_px=40", "ocr.tesseract.preprocess=none"])
    assert (cfg.ocr.rapidocr.det_max_side, cfg.ocr.rapidocr.min_side, cfg.ocr.second_pass_text_px) == (960, 700, 40)
    assert cfg.ocr.tesseract.preprocess == "none"
    assert load_config(overrides=["ocr.rapidocr.det_max_side=0"]).ocr.rapidocr.det_max_side == 0  # full size
    with pytest.raises(ConfigError, match="unknown setting ocr.rapidocr.det_max"):
        load_config(overrides=["ocr.rapidocr.det_max=960"])  # a renamed key fails, never silently ignored
    with pytest.raises(ConfigError, match="preprocess"):
        load_config(overrides=["ocr.tesseract.preprocess=sharpen"])
    with pytest.raises(ConfigError, match="det_max_side"):
        load_config(overrides=["ocr.rapidocr.det_max_side=100"])
    with pytest.raises(ConfigError, match="det_upscale"):
        load_config(overrides=["ocr.rapidocr.det_upscale=0.5"])
    assert load_config(overrides=["ocr.tesseract.extra_psm=[3, 6]"]).ocr.tesseract.extra_psm == [3, 6]
    with pytest.raises(ConfigError, match="extra_psm"):
        load_config(overrides=["ocr.tesseract.extra_psm=[14]"])
    assert load_config(overrides=["ocr.rapidocr.memory_arena=false"]).ocr.rapidocr.memory_arena is False


def _vertical_label(clockwise: bool) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """'76 cm' printed along a vertical dimension line, reading bottom to top or (clockwise) top to bottom."""
    img = Image.new("RGB", (500, 600), "white")
    strip = Image.new("RGB", (330, 100), "white")
    ImageDraw.Draw(strip).text((15, 10), "76 cm", fill="black", font=_font(70))
    vertical = strip.rotate(-90 if clockwise else 90, expand=True)
    img.paste(vertical, (150, 120))
    ImageDraw.Draw(img).line((270, 100, 270, 500), fill="black", width=3)
    return img, (150, 120, 150 + vertical.width, 120 + vertical.height)


@needs_rapidocr
@pytest.mark.parametrize("clockwise", [False, True])
def test_rapidocr_reads_vertical_labels_turned_either_way(clockwise: bool) -> None:
    img, region = _vertical_label(clockwise)
    tokens = get_engine(_cfg("rapidocr"), IMAGING).read(img)
    found = _find(tokens, r"^76")
    assert found, [t.text for t in tokens]
    assert " ".join(t.text for t in tokens if t.line == found[0].line).replace(" ", "").lower() == "76cm"
    assert found[0].angle == (90 if clockwise else 270) and _inside(found[0], region, slack=15)


def _small_print() -> Image.Image:
    img = Image.new("RGB", (420, 160), "white")
    ImageDraw.Draw(img).text((20, 60), "Net Wt 250 g", fill="black", font=_font(22))
    return img


@needs_rapidocr
def test_the_second_look_runs_only_where_the_first_reading_lacks_something() -> None:
    img = _small_print()
    engine = get_engine(_cfg("rapidocr", second_pass=True, second_pass_detail_max_side=1300), IMAGING)
    satisfied = engine.read_passes(img, lambda tokens: False)
    assert satisfied.passes == ["upright"]
    lacking = engine.read_passes(img, lambda tokens: True)
    # every step of the second look, in order; the rotated passes because the first reading had none
    assert lacking.passes == ["upright", "regions", "detail", "rotated"]
    # the closer reading is merged, not duplicated, and mapped back to the image's pixels
    values = _find(lacking.tokens, r"^250")
    assert len(values) == 1 and values[0].left + values[0].width <= img.width
    untargeted = get_engine(_cfg("rapidocr", second_pass=True, second_pass_targeted=False), IMAGING)
    assert "regions" in untargeted.read_passes(img, lambda tokens: False).passes


@needs_rapidocr
def test_the_second_look_stops_once_the_entities_have_a_candidate() -> None:
    from imagequant.scoring.second_look import lacks_candidates

    img = _small_print()
    engine = get_engine(_cfg("rapidocr", second_pass=True), IMAGING)
    # the weight is read at once: no second look for it; a voltage is not printed: every step runs
    assert engine.read_passes(img, lacks_candidates(["item_weight"], img.size)).passes == ["upright"]
    assert engine.read_passes(img, lacks_candidates(["voltage"], img.size)).passes[1:] == ["regions", "detail",
                                                                                             "rotated"]


@needs_rapidocr
def test_the_detail_pass_of_a_large_image_detects_at_full_resolution() -> None:
    img = Image.new("RGB", (2400, 1200), "white")
    ImageDraw.Draw(img).text((1500, 1000), "12 V", fill="black", font=_font(18))
    engine = get_engine(_cfg("rapidocr"), IMAGING)
    first = engine.read(img)
    detail = engine.read_detail(img, Deadline(30.0))
    assert detail is not None
    found = _find(detail, r"^12")
    assert found, ([t.text for t in first], [t.text for t in detail])
    assert 1490 <= found[0].left <= 1530 and 990 <= found[0].top <= 1030


@needs_rapidocr
def test_the_detail_pass_does_not_read_again_a_line_read_already() -> None:
    img = Image.new("RGB", (2400, 1200), "white")
    draw = ImageDraw.Draw(img)
    draw.text((200, 150), "NET WEIGHT 500 g", fill="black", font=_font(90))
    draw.text((1500, 1000), "12 V", fill="black", font=_font(18))
    engine = get_engine(_cfg("rapidocr"), IMAGING)
    first = engine.read(img)
    assert _find(first, r"^500") and not _find(first, r"^12"), [t.text for t in first]
    everything = engine.read_detail(img, Deadline(30.0))
    assert everything is not None and _find(everything, r"^500") and _find(everything, r"^12")
    new_only = engine.read_detail(img, Deadline(30.0), first)
    assert new_only is not None and _find(new_only, r"^12") and not _find(new_only, r"^500"), [t.text for t in new_only]
    # a line the first reading was unsure of is read again
    unsure = [dataclasses.replace(t, conf=60.0) for t in first]
    again = engine.read_detail(img, Deadline(30.0), unsure)
    assert again is not None and _find(again, r"^500") and _find(again, r"^12"), [t.text for t in again]
    # the whole reading still holds both: the known line's tokens stay as the first pass read them
    reading = get_engine(_cfg("rapidocr", second_pass=True), IMAGING).read_passes(img, lambda tokens: True)
    assert "detail" in reading.passes and _find(reading.tokens, r"^500") and _find(reading.tokens, r"^12")


def test_the_rotated_pass_does_not_read_again_a_line_read_sure() -> None:
    img = Image.new("RGB", (1000, 700), "white")
    ImageDraw.Draw(img).text((60, 80), "NET WEIGHT 500 g", fill="black", font=_font(60))
    standing = Image.new("RGB", (300, 70), "white")
    ImageDraw.Draw(standing).text((10, 5), "12 VOLT", fill="black", font=_font(50))
    img.paste(standing.transpose(Image.Transpose.ROTATE_90), (850, 250))
    engine = get_engine(_cfg("rapidocr"), IMAGING)
    upright = engine.read_pass(img, Deadline(30.0))
    weight_line = {t.line for t in _find(upright, r"^500")}
    known = [t for t in upright if t.line in weight_line]
    assert known and all(t.conf >= 90 for t in known), [(t.text, t.conf) for t in upright]
    turned = img.transpose(Image.Transpose.ROTATE_270)

    def turned_reading(tokens: list[OcrToken]) -> list[OcrToken]:
        read = [rotate_box_back(b, 90, img.size) for b in engine.lines_read(tokens)]
        return engine.read_pass_anew(turned, Deadline(30.0), read)

    everything = engine.read_pass(turned, Deadline(30.0))
    assert _find(everything, r"^500") and _find(everything, r"^12"), [t.text for t in everything]
    new_only = turned_reading(known)
    assert _find(new_only, r"^12") and not _find(new_only, r"^500"), [t.text for t in new_only]
    # a line the first reading was unsure of is read again, and with reread_lines every line is
    unsure = turned_reading([dataclasses.replace(t, conf=60.0) for t in known])
    assert _find(unsure, r"^500") and _find(unsure, r"^12"), [t.text for t in unsure]
    rereading = get_engine(_cfg("rapidocr", rapidocr=dataclasses.replace(engine.cfg.rapidocr, reread_lines=True)),
                           IMAGING)
    assert rereading.lines_read(known) == [] and engine.lines_read(known)
