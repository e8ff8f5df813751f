"""Tesseract through pytesseract: one ``image_to_data`` call per pass; a pass's process CPU time is charged to the
read's budget when it ends, and a pass is killed at the wall-clock backstop."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from typing import Any

from PIL import Image, ImageOps

from imagequant.config import ImagingConfig, OcrConfig
from imagequant.core.tokens import OcrToken, scale_box, token_box
from imagequant.imaging import prepare_for_ocr
from imagequant.ocr.base import Deadline, OcrEngine, OcrError, OcrTimeout, child_cpu_seconds
from imagequant.ocr.merging import clean_text, merge_tokens, split_glued_tokens


class TesseractEngine(OcrEngine):
    """Tesseract through pytesseract: one ``image_to_data`` call per pass. The process's CPU time counts against
    the read's budget once the pass ends (a pass over budget ends the read as ``ocr_timeout``, as a stopped
    RapidOCR call does); a process still running at the wall-clock backstop is killed."""

    name = "tesseract"

    def __init__(self, cfg: OcrConfig, imaging: ImagingConfig) -> None:
        super().__init__(cfg, imaging)
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
        mode = self.cfg.tesseract.preprocess
        if mode == "none":
            return img
        gray = img.convert("L")
        if mode == "autocontrast":
            gray = ImageOps.autocontrast(gray, cutoff=1)
        return gray

    def _run(self, img: Image.Image, args: str, deadline: Deadline) -> list[OcrToken]:
        deadline.check("tesseract")
        remaining = deadline.wall_remaining()
        pixels = self._prepare_pixels(img)
        # Uncompressed PNM: pytesseract would otherwise write PNG (0.25 s for a 1600 px image) or, for an
        # image still tagged JPEG, a lossy JPEG.
        fd, path = tempfile.mkstemp(prefix="imagequant-", suffix=".pgm" if pixels.mode == "L" else ".ppm")
        os.close(fd)
        try:
            pixels.save(path, format="PPM")
            # Wall-clock kill at the backstop only: the process's CPU time is what the budget counts (below).
            before = child_cpu_seconds()
            data = self._pt.image_to_data(
                path, lang=self._lang, config=args, output_type=self._pt.Output.DICT, timeout=remaining
            )
            deadline.charge(child_cpu_seconds() - before)
            deadline.check("tesseract")
        except RuntimeError as exc:
            if "timeout" in str(exc).lower():
                raise OcrTimeout(f"tesseract killed at the wall-clock backstop of {deadline.wall_seconds:g} s "
                                 f"(ocr.timeout_s={deadline.seconds:g} x ocr.wall_timeout_factor)") from exc
            raise OcrError("ocr_error", f"tesseract failed: {exc}") from exc
        except self._pt.TesseractNotFoundError as exc:
            raise OcrError("ocr_error", "tesseract binary not found; install it with: apt-get install tesseract-ocr") from exc
        except self._pt.TesseractError as exc:
            raise OcrError("ocr_error", f"tesseract failed: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)
        return parse_tesseract_data(data)

    def read_pass(self, img: Image.Image, deadline: Deadline) -> list[OcrToken]:
        prepared, scale = prepare_for_ocr(
            img, self.imaging.ocr_min_side, self.imaging.ocr_max_side, self.imaging.ocr_max_upscale,
            max_pixels=self.imaging.max_pixels,
        )
        tokens = self._run(prepared, self._args, deadline)
        for args in self._extra_args:
            tokens = merge_tokens(tokens, self._run(prepared, args, deadline))
        if scale != 1.0:
            scaled = []
            for t in tokens:
                b = scale_box(token_box(t), scale, img.size)
                scaled.append(dataclasses.replace(t, left=b[0], top=b[1], width=b[2], height=b[3]))
            tokens = scaled
        return split_glued_tokens(tokens) if self.cfg.split_letter_digit else tokens

    def read_region(self, crop: Image.Image, deadline: Deadline) -> list[OcrToken]:
        # A region is one or two lines: block mode reads it whole instead of hunting for sparse words.
        return self._run(crop, self._region_args, deadline)


def parse_tesseract_data(data: dict[str, list[Any]]) -> list[OcrToken]:
    """Word tokens from pytesseract's DICT output; empty words and conf -1 rows (layout rows) are dropped."""
    tokens: list[OcrToken] = []
    line_ids: dict[tuple[int, int, int], int] = {}
    words_in_line: dict[int, int] = {}
    texts = data.get("text", [])
    for i, raw in enumerate(texts):
        text = clean_text(str(raw))
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

