"""OCR engines behind one seam: ``get_engine(cfg, imaging).read(img) -> list[OcrToken]``.

Engines: ``tesseract`` (pytesseract, one ``image_to_data`` call per pass), ``rapidocr`` (PP-OCRv4 models run
by onnxruntime, shipped in the rapidocr_onnxruntime wheel, fully offline) and ``both`` (the two merged).
Every engine returns word tokens whose boxes are in the pixel coordinates of the image passed to ``read``.

Each ``read`` runs under one deadline of ``cfg.timeout_s`` seconds covering all of its passes:
- Tesseract runs as a subprocess that pytesseract kills when the remaining time runs out.
- RapidOCR runs in the calling thread; a watchdog timer sets onnxruntime's ``RunOptions.terminate`` so a
  model call in progress is abandoned, and the Python steps between model calls check the deadline. The
  Python steps are bounded by the image size (the decoder caps pixels), so no read outlives its deadline
  by more than one such step. Both raise ``OcrTimeout`` (kind "ocr_timeout").

Recall passes (each measured on real product images, see jobs/measure_ocr.py):
- ``cfg.rotated_pass``: dimension drawings print heights vertically; the image is also read rotated by
  90 and 270 degrees and the tokens of those passes that contain digits are added, mapped back.
- ``cfg.second_pass``: where a line holds a number with no unit after it (or a unit with no number before
  it) the region is cropped, enlarged and read again; the new reading replaces the old one when it
  completes a number+unit mention.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps

from imagequant.config import ImagingConfig, OcrConfig
from imagequant.imaging import ImageError, prepare_for_ocr, resize_target

log = logging.getLogger(__name__)

OCR_ERROR_KINDS = ("ocr_timeout", "ocr_error")


class OcrError(Exception):
    """OCR that failed for one image. ``kind`` is one of OCR_ERROR_KINDS and is what gets recorded."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in OCR_ERROR_KINDS:
            raise ValueError(f"unknown OCR error kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class OcrTimeout(OcrError):
    """The engine did not finish one image within ``ocr.timeout_s``."""

    def __init__(self, message: str) -> None:
        super().__init__("ocr_timeout", message)


@dataclass(frozen=True)
class OcrToken:
    """One word read from an image. Boxes are in the pixel coordinates of the decoded original image."""

    text: str
    conf: float  # 0..100, as Tesseract reports; other engines are mapped to that scale
    left: int
    top: int
    width: int
    height: int
    block: int  # text block number (engine's own layout grouping)
    line: int  # line number, unique within the image (not only within a block)
    word: int  # word position within its line
    angle: int = 0  # rotation (degrees, counter-clockwise) of the pass that read it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OcrToken:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class OcrEngine(Protocol):
    """What every engine offers: a name and one method reading an RGB image."""

    name: str

    def read(self, img: Image.Image) -> list[OcrToken]: ...


@dataclass(frozen=True)
class OcrTuning:
    """Engine knobs from the OCR study that are not (yet) keys of OcrConfig; the defaults are the measured best.

    ``get_engine`` reads a same-named attribute of ``cfg`` / ``cfg.rapidocr`` first when the configuration has
    one, so promoting a knob to a config key needs no change here.
    """

    max_upscale: float = 3.0  # largest enlargement of small images for Tesseract
    tess_preprocess: str = "gray"  # none | gray | autocontrast: what Tesseract is given
    rapid_det_max_side: int = 1280  # the detector sees at most this long side; recognition uses full resolution
    rapid_min_side: int = 0  # enlarge images whose short side is smaller before RapidOCR (0: never)
    rapid_det_upscale: float = 1.0  # the detector may see a small image enlarged up to this factor
    rapid_rotated_pass: bool = False  # RapidOCR already reads vertical lines (tall boxes are turned)
    rotated_angles: tuple[int, ...] = (90, 270)
    second_pass_max_regions: int = 4
    second_pass_text_px: int = 48  # target text height of a region read again
    split_letter_digit: bool = True  # "NETWT.180G" (RapidOCR drops spaces) -> "NETWT." "180G"


# ---------------------------------------------------------------------------------------------------------
# Deadline and geometry helpers
# ---------------------------------------------------------------------------------------------------------


class _Deadline:
    """The time budget of one ``read`` call, shared by all of its passes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.remaining() <= 0:
            raise OcrTimeout(f"{what}: OCR exceeded {self.seconds:g} s")


Box = tuple[int, int, int, int]  # left, top, width, height


def token_box(t: OcrToken) -> Box:
    return (t.left, t.top, t.width, t.height)


def _intersection(a: Box, b: Box) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def box_overlap(a: Box, b: Box) -> float:
    """max(IoU, intersection over the smaller area): high when boxes coincide or one holds the other."""
    inter = _intersection(a, b)
    if inter == 0:
        return 0.0
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    iou = inter / float(area_a + area_b - inter)
    ios = inter / float(max(1, min(area_a, area_b)))
    return max(iou, ios)


def rotate_box_back(box: Box, angle: int, rotated_size: tuple[int, int]) -> Box:
    """Maps a box found in an image rotated by ``angle`` (CCW, PIL's transpose) back to the original image.

    ``rotated_size`` is (width, height) of the rotated image.
    """
    left, top, w, h = box
    rw, rh = rotated_size
    if angle % 360 == 0:
        return box
    if angle % 360 == 90:  # ROTATE_90: original (x, y) -> (y, W - x); W = rotated height
        return (rh - (top + h), left, h, w)
    if angle % 360 == 270:  # ROTATE_270: original (x, y) -> (H - y, x); H = rotated width
        return (top, rw - (left + w), h, w)
    if angle % 360 == 180:
        return (rw - (left + w), rh - (top + h), w, h)
    raise ValueError(f"unsupported rotation {angle}")


_ROTATIONS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def _scale_box(box: Box, scale: float, bounds: tuple[int, int]) -> Box:
    """Divides a box by ``scale`` (prepared -> original pixels) and clips it to ``bounds`` (width, height)."""
    left = max(0, int(round(box[0] / scale)))
    top = max(0, int(round(box[1] / scale)))
    right = min(bounds[0], int(round((box[0] + box[2]) / scale)))
    bottom = min(bounds[1], int(round((box[1] + box[3]) / scale)))
    return (left, top, max(1, right - left), max(1, bottom - top))


def _clean_text(text: str) -> str:
    # NFKC folds full-width digits/letters that PP-OCR's Chinese-English dictionary emits ("５００ｇ").
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _norm_for_compare(text: str) -> str:
    return re.sub(r"[^0-9a-z.]", "", text.lower())


def similar_text(a: str, b: str) -> bool:
    """Whether two readings of one region say the same thing (case, punctuation and small slips aside)."""
    na, nb = _norm_for_compare(a), _norm_for_compare(b)
    if not na or not nb:
        return na == nb
    if na == nb or na in nb or nb in na:
        return True
    return SequenceMatcher(None, na, nb).ratio() >= 0.6


_DIGIT = re.compile(r"\d")


def has_digit(text: str) -> bool:
    return bool(_DIGIT.search(text))


# ---------------------------------------------------------------------------------------------------------
# Token list operations
# ---------------------------------------------------------------------------------------------------------


def _offset_ids(tokens: Sequence[OcrToken], line_offset: int, block_offset: int) -> list[OcrToken]:
    return [dataclasses.replace(t, line=t.line + line_offset, block=t.block + block_offset) for t in tokens]


def _next_ids(tokens: Sequence[OcrToken]) -> tuple[int, int]:
    if not tokens:
        return 0, 0
    return max(t.line for t in tokens) + 1, max(t.block for t in tokens) + 1


def reading_order(tokens: Sequence[OcrToken]) -> list[OcrToken]:
    """Keeps each line's tokens together (by word index), lines sorted top to bottom then left to right,
    and renumbers lines 0..n-1 in that order (words 0..k-1 within each line)."""
    lines: dict[int, list[OcrToken]] = {}
    for t in tokens:
        lines.setdefault(t.line, []).append(t)

    def line_key(item: tuple[int, list[OcrToken]]) -> tuple[int, int, int]:
        toks = item[1]
        # Rotated lines sort by their top like the rest; the height bucket keeps one printed row together.
        return (min(t.top for t in toks), min(t.left for t in toks), item[0])

    out: list[OcrToken] = []
    for new_line, (_, toks) in enumerate(sorted(lines.items(), key=line_key)):
        for new_word, t in enumerate(sorted(toks, key=lambda t: t.word)):
            out.append(dataclasses.replace(t, line=new_line, word=new_word))
    return out


def merge_tokens(
    primary: Sequence[OcrToken], secondary: Sequence[OcrToken], min_overlap: float = 0.5
) -> list[OcrToken]:
    """Merges two engines' readings of one image.

    A secondary token that overlaps a primary one (IoU or intersection over the smaller box > min_overlap)
    with similar text is a duplicate: the one with the higher confidence is kept, in the primary token's
    place (its line and word position) so the primary lines stay whole. Other secondary tokens are added
    with their own (renumbered) lines.
    """
    result = list(primary)
    line_offset, block_offset = _next_ids(primary)
    added: list[OcrToken] = []
    for s in secondary:
        best_i, best_ov = -1, 0.0
        for i, p in enumerate(result):
            ov = box_overlap(token_box(p), token_box(s))
            if ov > best_ov:
                best_i, best_ov = i, ov
        if best_i >= 0 and best_ov > min_overlap and similar_text(result[best_i].text, s.text):
            p = result[best_i]
            if s.conf > p.conf:
                result[best_i] = dataclasses.replace(s, block=p.block, line=p.line, word=p.word, angle=p.angle)
            continue
        added.append(dataclasses.replace(s, line=s.line + line_offset, block=s.block + block_offset))
    return reading_order(result + added)


def add_rotated_tokens(upright: Sequence[OcrToken], rotated: Sequence[OcrToken]) -> list[OcrToken]:
    """Adds the lines of rotated passes that hold a digit (with their other words: a unit is often a word of
    its own) unless an upright token already says the same there."""
    line_offset, block_offset = _next_ids(upright)
    out = list(upright)
    digit_lines = {(t.angle, t.line) for t in rotated if has_digit(t.text)}
    for t in rotated:
        if (t.angle, t.line) not in digit_lines:
            continue
        dup = any(
            box_overlap(token_box(u), token_box(t)) > 0.5 and similar_text(u.text, t.text) and u.conf >= t.conf
            for u in upright
        )
        if not dup:
            out.append(dataclasses.replace(t, line=t.line + line_offset, block=t.block + block_offset))
    return out


# Units printed on packaging, used only to decide where a second look may pay (the candidate extractor
# has the full list). Short forms need the word boundary so "9" in "1999" is not a trigger.
_UNIT_WORD = (
    r"(?:mg|g|gm|gms|gr|grams?|kg|kgs|kilos?|kilograms?|mcg|µg|ug|oz|ounces?|lbs?|pounds?|tons?|"
    r"v|volts?|kv|mv|vac|vdc|w|watts?|kw|mm|cm|m|in|inch(?:es)?|ft|feet|foot|yds?|"
    r"ml|l|ltr|litres?|liters?|cl|dl|fl\.?oz|gal|gallons?|qt|quarts?|pt|pints?|cups?)"
)
_NUMBER_UNIT = re.compile(r"\d+(?:[.,]\d+)?\s*" + _UNIT_WORD + r"(?![a-z])", re.IGNORECASE)
_UNIT_ONLY = re.compile(r"^[(\[]?" + _UNIT_WORD + r"[)\].,:;]?$", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"^[~≈(\[]?\d{1,5}(?:[.,]\d{1,3})?[)\].,:;]?$")


def incomplete_mentions(tokens: Sequence[OcrToken]) -> list[OcrToken]:
    """Tokens holding a number with no unit next to it, or a unit with no number before it."""
    lines: dict[int, list[OcrToken]] = {}
    for t in tokens:
        lines.setdefault(t.line, []).append(t)
    found: list[OcrToken] = []
    for toks in lines.values():
        toks = sorted(toks, key=lambda t: t.word)
        for i, t in enumerate(toks):
            prev_t = toks[i - 1].text if i > 0 else ""
            next_t = toks[i + 1].text if i + 1 < len(toks) else ""
            bare_number = _BARE_NUMBER.match(t.text) and not _NUMBER_UNIT.match(f"{t.text}{next_t}".replace(" ", ""))
            lone_unit = _UNIT_ONLY.match(t.text) and not re.search(r"\d[.,)]?$", prev_t)
            if bare_number or lone_unit:
                found.append(t)
    return found


# ---------------------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------------------


class _PassEngine:
    """Shared logic of the single engines: passes (upright, rotated, second look) under one deadline."""

    name = "base"

    def __init__(self, cfg: OcrConfig, imaging: ImagingConfig, tuning: OcrTuning) -> None:
        self.cfg = cfg
        self.imaging = imaging
        self.tuning = tuning
        self.rotated_pass = cfg.rotated_pass

    def read(self, img: Image.Image) -> list[OcrToken]:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return self.read_with_deadline(img, _Deadline(self.cfg.timeout_s))

    def read_with_deadline(self, img: Image.Image, deadline: _Deadline) -> list[OcrToken]:
        tokens = self._read_image(img, deadline)
        if self.rotated_pass:
            rotated: list[OcrToken] = []
            for angle in self.tuning.rotated_angles:
                deadline.check(f"{self.name} rotated pass")
                turned = img.transpose(_ROTATIONS[angle])
                offset_line, offset_block = _next_ids(rotated)
                for t in self._read_image(turned, deadline):
                    box = rotate_box_back(token_box(t), angle, turned.size)
                    rotated.append(
                        dataclasses.replace(
                            t, left=box[0], top=box[1], width=box[2], height=box[3],
                            angle=(t.angle + angle) % 360,
                            line=t.line + offset_line, block=t.block + offset_block,
                        )
                    )
            tokens = add_rotated_tokens(tokens, rotated)
        if self.cfg.second_pass:
            tokens = self._second_pass(img, tokens, deadline)
        keep = [t for t in tokens if t.text and t.conf >= self.cfg.min_confidence]
        return reading_order(keep)

    def _read_image(self, img: Image.Image, deadline: _Deadline) -> list[OcrToken]:
        """Tokens of one pass over ``img``, in ``img``'s pixel coordinates."""
        raise NotImplementedError

    def _read_region(self, crop: Image.Image, deadline: _Deadline) -> list[OcrToken]:
        """Tokens of an enlarged crop holding one or a few lines of text (crop coordinates)."""
        return self._read_image(crop, deadline)

    def reread_incomplete(self, img: Image.Image, tokens: list[OcrToken]) -> list[OcrToken]:
        """The second pass alone: re-reads the regions of ``tokens`` holding incomplete mentions."""
        return reading_order(self._second_pass(img.convert("RGB"), list(tokens), _Deadline(self.cfg.timeout_s)))

    def _second_pass(self, img: Image.Image, tokens: list[OcrToken], deadline: _Deadline) -> list[OcrToken]:
        """Crops each incomplete mention with its line neighbourhood, enlarges it to ~second_pass_text_px
        high text and reads it again; the new tokens replace the old ones there only if they complete a
        number+unit mention."""
        triggers = [t for t in incomplete_mentions(tokens) if t.angle == 0]
        # Larger print first: the headline value is usually the biggest number on the pack.
        triggers.sort(key=lambda t: -t.height)
        done: list[Box] = []
        for trig in triggers:
            if len(done) >= self.tuning.second_pass_max_regions:
                break
            h = max(trig.height, 4)
            region = (
                max(0, trig.left - 4 * h),
                max(0, trig.top - h // 2),
                min(img.width, trig.left + trig.width + 4 * h),
                min(img.height, trig.top + trig.height + h // 2),
            )
            rbox = (region[0], region[1], region[2] - region[0], region[3] - region[1])
            if any(box_overlap(rbox, d) > 0.5 for d in done) or rbox[2] < 2 or rbox[3] < 2:
                continue
            done.append(rbox)
            deadline.check(f"{self.name} second pass")
            factor = min(4.0, max(1.0, self.tuning.second_pass_text_px / h))
            crop = img.crop(region)
            if factor > 1.0:
                try:
                    enlarged = resize_target(crop.size, scale=factor, max_pixels=self.imaging.max_pixels,
                                             what="second-pass enlargement")
                except ImageError:
                    continue  # too large to enlarge: this optional pass skips the region
                crop = crop.resize(enlarged, Image.Resampling.LANCZOS)
            fx, fy = crop.width / rbox[2], crop.height / rbox[3]
            new = self._read_region(crop, deadline)
            if not any(_NUMBER_UNIT.search(t.text) for t in new) and not _joined_has_unit(new):
                continue
            mapped = []
            for t in new:
                left = rbox[0] + int(round(t.left / fx))
                top = rbox[1] + int(round(t.top / fy))
                mapped.append(
                    dataclasses.replace(
                        t, left=left, top=top, width=max(1, int(round(t.width / fx))),
                        height=max(1, int(round(t.height / fy))),
                    )
                )
            # The new reading replaces the old tokens that lie inside the region.
            kept = [t for t in tokens if box_overlap(token_box(t), rbox) <= 0.5 or t.angle != 0]
            line_offset, block_offset = _next_ids(kept)
            tokens = kept + _offset_ids(mapped, line_offset, block_offset)
        return tokens


def _joined_has_unit(tokens: Sequence[OcrToken]) -> bool:
    lines: dict[int, list[str]] = {}
    for t in sorted(tokens, key=lambda t: (t.line, t.word)):
        lines.setdefault(t.line, []).append(t.text)
    return any(_NUMBER_UNIT.search(" ".join(words)) for words in lines.values())


class TesseractEngine(_PassEngine):
    """Tesseract through pytesseract: one ``image_to_data`` call per pass, killed at the deadline."""

    name = "tesseract"

    def __init__(self, cfg: OcrConfig, imaging: ImagingConfig, tuning: OcrTuning) -> None:
        super().__init__(cfg, imaging, tuning)
        import pytesseract

        self._pt = pytesseract
        cmd = pytesseract.pytesseract.tesseract_cmd
        if shutil.which(cmd) is None:
            raise OcrError(
                "ocr_error",
                f"the tesseract binary ({cmd!r}) is not installed or not on PATH; "
                "install it with: apt-get install tesseract-ocr",
            )
        tc = cfg.tesseract
        # pytesseract starts tesseract with os.environ. OpenMP threads inside one Tesseract fight the
        # executor's other tasks for cores (4x slower on a busy machine), so pin them. TESSDATA_PREFIX is
        # passed through untouched when set; nothing else is added.
        os.environ["OMP_THREAD_LIMIT"] = str(max(1, tc.thread_limit))
        self._args = f"--psm {tc.psm} --oem {tc.oem} {tc.extra_args}".strip()
        self._extra_args = [f"--psm {psm} --oem {tc.oem} {tc.extra_args}".strip() for psm in tc.extra_psm]
        self._region_args = f"--psm 6 --oem {tc.oem} {tc.extra_args}".strip()
        self._lang = tc.lang

    def _prepare_pixels(self, img: Image.Image) -> Image.Image:
        mode = self.tuning.tess_preprocess
        if mode == "none":
            return img
        gray = img.convert("L")
        if mode == "autocontrast":
            gray = ImageOps.autocontrast(gray, cutoff=1)
        return gray

    def _run(self, img: Image.Image, args: str, deadline: _Deadline) -> list[OcrToken]:
        deadline.check("tesseract")
        remaining = deadline.remaining()
        pixels = self._prepare_pixels(img)
        # Uncompressed PNM: pytesseract would otherwise write PNG (0.25 s for a 1600 px image) or, for an
        # image still tagged JPEG, a lossy JPEG.
        fd, path = tempfile.mkstemp(prefix="imagequant-", suffix=".pgm" if pixels.mode == "L" else ".ppm")
        os.close(fd)
        try:
            pixels.save(path, format="PPM")
            data = self._pt.image_to_data(
                path, lang=self._lang, config=args, output_type=self._pt.Output.DICT, timeout=remaining
            )
        except RuntimeError as exc:
            if "timeout" in str(exc).lower():
                raise OcrTimeout(f"tesseract killed after {remaining:.1f} s (ocr.timeout_s={deadline.seconds:g})") from exc
            raise OcrError("ocr_error", f"tesseract failed: {exc}") from exc
        except self._pt.TesseractNotFoundError as exc:
            raise OcrError("ocr_error", "tesseract binary not found; install it with: apt-get install tesseract-ocr") from exc
        except self._pt.TesseractError as exc:
            raise OcrError("ocr_error", f"tesseract failed: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)
        return parse_tesseract_data(data)

    def _read_image(self, img: Image.Image, deadline: _Deadline) -> list[OcrToken]:
        prepared, scale = prepare_for_ocr(
            img, self.imaging.ocr_min_side, self.imaging.ocr_max_side, self.tuning.max_upscale,
            max_pixels=self.imaging.max_pixels,
        )
        tokens = self._run(prepared, self._args, deadline)
        for args in self._extra_args:
            tokens = merge_tokens(tokens, self._run(prepared, args, deadline))
        if scale != 1.0:
            scaled = []
            for t in tokens:
                b = _scale_box(token_box(t), scale, img.size)
                scaled.append(dataclasses.replace(t, left=b[0], top=b[1], width=b[2], height=b[3]))
            tokens = scaled
        return split_glued_tokens(tokens) if self.tuning.split_letter_digit else tokens

    def _read_region(self, crop: Image.Image, deadline: _Deadline) -> list[OcrToken]:
        # A region is one or two lines: block mode reads it whole instead of hunting for sparse words.
        return self._run(crop, self._region_args, deadline)


def parse_tesseract_data(data: dict[str, list[Any]]) -> list[OcrToken]:
    """Word tokens from pytesseract's DICT output; empty words and conf -1 rows (layout rows) are dropped."""
    tokens: list[OcrToken] = []
    line_ids: dict[tuple[int, int, int], int] = {}
    words_in_line: dict[int, int] = {}
    texts = data.get("text", [])
    for i, raw in enumerate(texts):
        text = _clean_text(str(raw))
        try:
            conf = float(data["conf"][i])
        except (TypeError, ValueError):
            conf = -1.0
        if not text or conf < 0:
            continue
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        line = line_ids.setdefault(key, len(line_ids))
        word = words_in_line.get(line, 0)
        words_in_line[line] = word + 1
        tokens.append(
            OcrToken(
                text=text, conf=conf, left=int(data["left"][i]), top=int(data["top"][i]),
                width=int(data["width"][i]), height=int(data["height"][i]),
                block=key[0], line=line, word=word,
            )
        )
    return tokens


_ENGINES_LOCK = threading.RLock()


class _TerminableSession:
    """Wraps an onnxruntime InferenceSession so a watchdog can abandon the model call in progress."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.run_options: Any = None

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, run_options or self.run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


# A number glued to the word before it: after two or more letters ("Weighs235g", "Wt500g") or after a letter
# and a separator ("NETWT.180G", "Weight:15g", "oz/80g", "(1GAL)3785ml"). Splitting there keeps a period
# that ends an abbreviation from being read as a decimal point (".180G" is not 0.18 g).
_SPLIT_GLUED = re.compile(r"(?<=[A-Za-z]{2})(?=\d)|(?<=[A-Za-z][.:/)])(?=\d)")


def split_line_words(text: str, split_letter_digit: bool = True) -> list[tuple[str, int, int]]:
    """Words of a recognised line with their [start, end) character spans.

    RapidOCR often drops spaces ("NETWT.180G"); with ``split_letter_digit`` a number glued to the word
    before it starts a new word (see _SPLIT_GLUED). A number followed by its unit ("180G") stays one word.
    """
    words: list[tuple[str, int, int]] = []
    for m in re.finditer(r"\S+", text):
        start = m.start()
        parts = _SPLIT_GLUED.split(m.group()) if split_letter_digit else [m.group()]
        for part in parts:
            if part:
                words.append((part, start, start + len(part)))
            start += len(part)
    return words


def split_glued_tokens(tokens: Sequence[OcrToken]) -> list[OcrToken]:
    """Splits tokens holding a number glued to a word; each part gets its share of the box by characters.

    The parts keep the token's word index (a stable sort keeps them in order) and the reading direction
    given by its angle decides which way the box is divided.
    """
    out: list[OcrToken] = []
    for t in tokens:
        parts = split_line_words(t.text)
        if len(parts) <= 1:
            out.append(t)
            continue
        n = len(t.text)
        for word, start, end in parts:
            f0, f1 = start / n, end / n
            if t.angle in (180, 270):  # read right to left / bottom to top in image coordinates
                f0, f1 = 1.0 - f1, 1.0 - f0
            if t.angle in (90, 270):
                top = t.top + int(round(f0 * t.height))
                box = (t.left, top, t.width, max(1, t.top + int(round(f1 * t.height)) - top))
            else:
                left = t.left + int(round(f0 * t.width))
                box = (left, t.top, max(1, t.left + int(round(f1 * t.width)) - left), t.height)
            out.append(dataclasses.replace(t, text=word, left=box[0], top=box[1], width=box[2], height=box[3]))
    return out


class _RapidModels:
    """The RapidOCR models of one process (loading them takes seconds), shared by every engine using them.

    Their onnxruntime sessions are wrapped so a watchdog can terminate a run; the lock keeps one image at a
    time on them (the terminate switch is per run, and a Spark Python worker runs one task at a time anyway).
    """

    def __init__(self, threads: int, use_cls: bool, memory_arena: bool) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise OcrError(
                "ocr_error",
                f"rapidocr_onnxruntime cannot be imported ({exc}); install it with: pip install 'imagequant[rapidocr]'",
            ) from exc
        # Pinned threads: a Spark executor runs one task per core, each must stay on its own core.
        with _memory_arena_enabled() if memory_arena else contextlib.nullcontext():
            self.ocr = RapidOCR(
                intra_op_num_threads=threads, inter_op_num_threads=1, use_cls=use_cls, print_verbose=False
            )
        self.lock = threading.Lock()
        self.sessions: list[_TerminableSession] = []
        for holder in (self.ocr.text_det.infer, self.ocr.text_cls.infer, self.ocr.text_rec.session):
            wrapped = _TerminableSession(holder.session)
            holder.session = wrapped
            self.sessions.append(wrapped)


@contextlib.contextmanager
def _memory_arena_enabled() -> Iterator[None]:
    """Builds RapidOCR's onnxruntime sessions with the CPU memory arena on.

    rapidocr_onnxruntime turns the arena off, so every model run maps and unmaps its buffers afresh (tens of
    MB per detection); on real product images that cost 37% more CPU per image, mostly system time spent on
    page faults. The arena keeps the largest run's buffers alive per process instead. rapidocr builds its
    sessions from a static options hook, which is swapped only while they are built.
    """
    from rapidocr_onnxruntime.utils import infer_engine

    session_class = infer_engine.OrtInferSession
    original = session_class.__dict__["_init_sess_opts"]

    def with_arena(config: dict[str, Any]) -> Any:
        options = original.__func__(config)
        options.enable_cpu_mem_arena = True
        return options

    session_class._init_sess_opts = staticmethod(with_arena)
    try:
        yield
    finally:
        session_class._init_sess_opts = original


_RAPID_MODELS: dict[tuple[int, int, bool, bool], _RapidModels] = {}


def _rapid_models(threads: int, use_cls: bool, memory_arena: bool) -> _RapidModels:
    key = (os.getpid(), threads, use_cls, memory_arena)
    with _ENGINES_LOCK:
        models = _RAPID_MODELS.get(key)
        if models is None:
            models = _RAPID_MODELS[key] = _RapidModels(threads, use_cls, memory_arena)
    return models


class RapidOcrEngine(_PassEngine):
    """RapidOCR (PP-OCRv4 det + cls + rec on onnxruntime), split into word tokens.

    Detection runs on a copy scaled to ``rapid_det_max_side`` (reduced: its cost grows with area; enlarged
    up to ``rapid_det_upscale``: small print is found); recognition crops the lines from the original image.
    """

    name = "rapidocr"

    def __init__(self, cfg: OcrConfig, imaging: ImagingConfig, tuning: OcrTuning) -> None:
        super().__init__(cfg, imaging, tuning)
        self.rotated_pass = cfg.rotated_pass and tuning.rapid_rotated_pass
        import onnxruntime

        self._ort = onnxruntime
        rc = cfg.rapidocr
        self._models = _rapid_models(max(1, rc.threads), rc.use_angle_cls, rc.memory_arena)
        self._ocr = self._models.ocr
        self._sessions = self._models.sessions
        self._use_cls = rc.use_angle_cls
        self._text_score = rc.text_score

    @contextlib.contextmanager
    def _watchdog(self, deadline: _Deadline) -> Iterator[Any]:
        deadline.check("rapidocr")
        remaining = deadline.remaining()
        run_options = self._ort.RunOptions()
        run_options.log_severity_level = 4
        for s in self._sessions:
            s.run_options = run_options
        fired = threading.Event()

        def terminate() -> None:
            fired.set()
            run_options.terminate = True

        timer = threading.Timer(remaining, terminate)
        timer.daemon = True
        timer.start()
        try:
            yield run_options
        except OcrTimeout:
            raise
        except Exception as exc:
            if fired.is_set():
                raise OcrTimeout(f"rapidocr stopped after {deadline.seconds:g} s") from exc
            raise OcrError("ocr_error", f"rapidocr failed: {exc}") from exc
        finally:
            timer.cancel()
            for s in self._sessions:
                s.run_options = None
        if fired.is_set():
            raise OcrTimeout(f"rapidocr stopped after {deadline.seconds:g} s")

    def _read_image(self, img: Image.Image, deadline: _Deadline) -> list[OcrToken]:
        scale = 1.0
        work = img
        min_side = self.tuning.rapid_min_side
        if min_side and min(img.size) < min_side:
            work, scale = prepare_for_ocr(img, min_side, max(min_side * 3, max(img.size)), self.tuning.max_upscale,
                                          max_pixels=self.imaging.max_pixels)
        tokens = self._read_array(np.ascontiguousarray(np.asarray(work)[:, :, ::-1]), deadline)
        if scale == 1.0:
            return tokens
        out = []
        for t in tokens:
            b = _scale_box(token_box(t), scale, img.size)
            out.append(dataclasses.replace(t, left=b[0], top=b[1], width=b[2], height=b[3]))
        return out

    def _read_array(self, bgr: np.ndarray, deadline: _Deadline) -> list[OcrToken]:
        import cv2

        ocr = self._ocr
        h, w = bgr.shape[:2]
        det_max = self.tuning.rapid_det_max_side
        det_scale = min(max(1.0, self.tuning.rapid_det_upscale), det_max / max(h, w)) if det_max else 1.0
        det_img = bgr
        if det_scale != 1.0:
            det_size = resize_target((w, h), scale=det_scale, max_pixels=self.imaging.max_pixels,
                                     what="detector resize")
            det_img = cv2.resize(
                bgr, det_size, interpolation=cv2.INTER_AREA if det_scale < 1.0 else cv2.INTER_CUBIC,
            )
        self._check_detector_input(det_img.shape[1], det_img.shape[0])
        with self._models.lock, self._watchdog(deadline):
            # Very flat or very short images get the letterbox RapidOCR itself would add.
            det_img, record = ocr.maybe_add_letterbox(det_img, {})
            pad_top = record.get("padding_1", {}).get("top", 0)
            boxes, _ = ocr.text_det(det_img)
            if boxes is None or len(boxes) == 0:
                return []
            deadline.check("rapidocr detection")
            boxes = ocr.sorted_boxes(boxes)
            quads = []
            for b in boxes:
                q = np.array(b, dtype=np.float32)
                q[:, 1] -= pad_top
                q /= det_scale
                q[:, 0] = np.clip(q[:, 0], 0, w - 1)
                q[:, 1] = np.clip(q[:, 1], 0, h - 1)
                quads.append(q)
            crops = ocr.get_crop_img_list(bgr, [q.copy() for q in quads])
            flipped = [False] * len(crops)
            if self._use_cls:
                deadline.check("rapidocr crops")
                crops, cls_res, _ = ocr.text_cls(crops)
                thresh = ocr.text_cls.cls_thresh
                flipped = [("180" in str(label) and float(score) > thresh) for label, score in cls_res]
            deadline.check("rapidocr classification")
            rec_res, _ = ocr.text_rec(crops)
        tokens: list[OcrToken] = []
        line = 0
        for quad, flip, res in zip(quads, flipped, rec_res, strict=True):
            text, score = _clean_text(str(res[0])), float(res[1])
            if not text or score < self._text_score:
                continue
            tokens.extend(self._line_tokens(text, score, quad, flip, line, (w, h)))
            line += 1
        return tokens

    def _check_detector_input(self, w: int, h: int) -> None:
        """Refuses (ImageError "pixel_bomb") a detector input RapidOCR itself would blow up: it pads flat
        images and enlarges the short side to limit_side_len (736), so a tall, narrow image (1 x 1280 after
        the detector resize) would become 736 x 942,080 pixels. Mirrors RapidOCR's own arithmetic."""
        ocr, det = self._ocr, self._ocr.text_det
        min_height = getattr(ocr, "min_height", 30)
        ratio_limit = getattr(ocr, "width_height_ratio", 8)
        if h <= min_height or (ratio_limit != -1 and w / h > ratio_limit):
            h = max(h, max(int(w / ratio_limit), min_height) * 2)
        limit = getattr(det, "limit_side_len", 736)
        enlarge = limit / min(w, h) if getattr(det, "limit_type", "min") == "min" and min(w, h) < limit else 1.0
        resize_target((w, h), scale=enlarge, max_pixels=self.imaging.max_pixels, what="RapidOCR detector input")

    def _line_tokens(
        self, text: str, score: float, quad: np.ndarray, flipped: bool, line: int, size: tuple[int, int]
    ) -> list[OcrToken]:
        p0, p1, p2, p3 = (quad[i].astype(np.float64) for i in range(4))
        # Same integer crop size as RapidOCR's get_crop_img_list, so "vertical" matches its decision.
        crop_w = int(max(np.linalg.norm(p0 - p1), np.linalg.norm(p2 - p3)))
        crop_h = int(max(np.linalg.norm(p0 - p3), np.linalg.norm(p1 - p2)))
        # RapidOCR turns crops at least 1.5x taller than wide by 90 degrees CCW: the text runs down the box.
        vertical = crop_w > 0 and crop_h / crop_w >= 1.5
        if vertical:
            e1a, e1b, e2a, e2b = p0, p3, p1, p2
            angle = 270 if flipped else 90
        else:
            e1a, e1b, e2a, e2b = p0, p1, p3, p2
            angle = 180 if flipped else 0
        n = max(1, len(text))
        out = []
        for word_i, (word, start, end) in enumerate(split_line_words(text, self.tuning.split_letter_digit)):
            f0, f1 = start / n, end / n
            if flipped:
                f0, f1 = 1.0 - f1, 1.0 - f0
            pts = np.array(
                [e1a + f0 * (e1b - e1a), e1a + f1 * (e1b - e1a), e2a + f0 * (e2b - e2a), e2a + f1 * (e2b - e2a)]
            )
            left = int(np.floor(max(0.0, pts[:, 0].min())))
            top = int(np.floor(max(0.0, pts[:, 1].min())))
            right = int(np.ceil(min(float(size[0]), pts[:, 0].max())))
            bottom = int(np.ceil(min(float(size[1]), pts[:, 1].max())))
            out.append(
                OcrToken(
                    text=word, conf=round(score * 100.0, 2), left=left, top=top,
                    width=max(1, right - left), height=max(1, bottom - top),
                    block=0, line=line, word=word_i, angle=angle,
                )
            )
        return out


class BothEngine:
    """RapidOCR and Tesseract on the same image, merged (RapidOCR's lines are the primary ones)."""

    name = "both"

    def __init__(self, rapid: RapidOcrEngine, tess: TesseractEngine, timeout_s: float) -> None:
        self.rapid = rapid
        self.tess = tess
        self.timeout_s = timeout_s

    def read(self, img: Image.Image) -> list[OcrToken]:
        if img.mode != "RGB":
            img = img.convert("RGB")
        deadline = _Deadline(self.timeout_s)
        first = self.rapid.read_with_deadline(img, deadline)
        second = self.tess.read_with_deadline(img, deadline)
        return merge_tokens(first, second)


# ---------------------------------------------------------------------------------------------------------
# Engine factory, cached per worker process
# ---------------------------------------------------------------------------------------------------------

_ENGINES: dict[tuple[int, str], OcrEngine] = {}


def resolve_tuning(cfg: OcrConfig, tuning: OcrTuning | None = None) -> OcrTuning:
    """The tuning to use: ``tuning`` when given, else the defaults with same-named config attributes applied."""
    if tuning is not None:
        return tuning
    changes = {}
    for f in dataclasses.fields(OcrTuning):
        # ocr.rapidocr.det_max_side sets rapid_det_max_side: the section already names the engine
        for holder, name in ((cfg, f.name), (cfg.rapidocr, f.name.removeprefix("rapid_")), (cfg.tesseract, f.name)):
            if hasattr(holder, name):
                value = getattr(holder, name)
                changes[f.name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(OcrTuning(), **changes)


def get_engine(cfg: OcrConfig, imaging: ImagingConfig, tuning: OcrTuning | None = None) -> OcrEngine:
    """The engine ``cfg.engine`` names, built once per (process, settings): model loading takes seconds."""
    tuning = resolve_tuning(cfg, tuning)
    key = (
        os.getpid(),
        json.dumps([asdict(cfg), asdict(imaging), asdict(tuning)], sort_keys=True, default=str),
    )
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _build_engine(cfg, imaging, tuning)
            _ENGINES[key] = engine
    return engine


def _build_engine(cfg: OcrConfig, imaging: ImagingConfig, tuning: OcrTuning) -> OcrEngine:
    if cfg.engine == "tesseract":
        return TesseractEngine(cfg, imaging, tuning)
    if cfg.engine == "rapidocr":
        return RapidOcrEngine(cfg, imaging, tuning)
    if cfg.engine == "both":
        return BothEngine(RapidOcrEngine(cfg, imaging, tuning), TesseractEngine(cfg, imaging, tuning), cfg.timeout_s)
    raise OcrError("ocr_error", f"unknown OCR engine {cfg.engine!r} (tesseract, rapidocr or both)")


__all__ = [
    "OCR_ERROR_KINDS",
    "BothEngine",
    "OcrEngine",
    "OcrError",
    "OcrTimeout",
    "OcrToken",
    "OcrTuning",
    "RapidOcrEngine",
    "TesseractEngine",
    "add_rotated_tokens",
    "box_overlap",
    "get_engine",
    "incomplete_mentions",
    "merge_tokens",
    "parse_tesseract_data",
    "reading_order",
    "rotate_box_back",
    "similar_text",
    "split_glued_tokens",
    "split_line_words",
]
