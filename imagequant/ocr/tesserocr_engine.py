"""``ocr.engine=tesserocr``: the Tesseract engine (same passes, same preprocessing, same psm/oem, same token
parsing) with each pytesseract subprocess call replaced by a call into a ``tesserocr.PyTessBaseAPI`` kept
alive for the worker's life, which saves starting a process and writing an image per pass.

An optional dependency (``pip install 'imagequant[tesserocr]'``); building the engine without it is an
``ocr_error`` naming the install command. Two differences a user of its readings must know: the tesserocr wheel bundles its own libtesseract (5.5.x at the time of
writing, the CLI here is Debian's 5.3), so the two may read words differently; and the wall-clock backstop is
Tesseract's own cancellation (``Recognize(timeout=...)``), which does not interrupt layout analysis, where
pytesseract kills a process. Recognition runs in the reading thread, so its CPU clock counts it against
``ocr.timeout_s``, checked when each pass ends.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

from PIL import Image

from imagequant.config import ImagingConfig, OcrConfig
from imagequant.core.tokens import OcrToken
from imagequant.ocr.base import Deadline, OcrError, OcrTimeout
from imagequant.ocr.tesseract import TesseractEngine, parse_tesseract_data

TSV_COLUMNS = ("level", "page_num", "block_num", "par_num", "line_num", "word_num", "left", "top", "width",
               "height", "conf", "text")


def tessdata_dir() -> str:
    """The traineddata folder the tesseract CLI uses (TESSDATA_PREFIX wins, as it does for the CLI)."""
    prefix = os.environ.get("TESSDATA_PREFIX")
    if prefix:
        return prefix
    out = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, timeout=30)
    match = re.search(r'"([^"]+)"', out.stdout + out.stderr)
    if not match:
        raise RuntimeError("cannot find the tessdata folder from `tesseract --list-langs`")
    return match.group(1)


def parse_tsv(text: str) -> dict[str, list[Any]]:
    """Tesseract's TSV (no header line, as GetTSVText gives it) as pytesseract's DICT output."""
    data: dict[str, list[Any]] = {c: [] for c in TSV_COLUMNS}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < len(TSV_COLUMNS) - 1 or not parts[0].isdigit():
            continue
        parts += [""] * (len(TSV_COLUMNS) - len(parts))
        for column, value in zip(TSV_COLUMNS, parts, strict=True):
            data[column].append(value)
    return data


class TesserocrEngine(TesseractEngine):
    """TesseractEngine whose passes call a resident PyTessBaseAPI (one per page segmentation mode)."""

    name = "tesserocr"

    def __init__(self, cfg: OcrConfig, imaging: ImagingConfig) -> None:
        super().__init__(cfg, imaging)
        try:
            import tesserocr
        except ImportError as exc:
            raise OcrError("ocr_error", f"tesserocr cannot be imported ({exc}); install it with: "
                                        "pip install 'imagequant[tesserocr]'") from exc

        self._tesserocr = tesserocr
        self._path = tessdata_dir()
        self._apis: dict[int, Any] = {}

    def _api(self, args: str) -> Any:
        psm = int(re.search(r"--psm\s+(\d+)", args).group(1))  # type: ignore[union-attr]
        api = self._apis.get(psm)
        if api is None:
            t = self._tesserocr
            api = t.PyTessBaseAPI(path=self._path, lang=self._lang, psm=psm, oem=self.cfg.tesseract.oem)
            self._apis[psm] = api
        return api

    def _run(self, img: Image.Image, args: str, deadline: Deadline) -> list[OcrToken]:
        deadline.check("tesserocr")
        remaining = deadline.wall_remaining()
        pixels = self._prepare_pixels(img)
        if pixels.mode not in ("L", "RGB"):
            pixels = pixels.convert("RGB")
        depth = 1 if pixels.mode == "L" else 3
        api = self._api(args)
        # Raw pixels: no encoding step, like the uncompressed PNM the pytesseract path writes.
        api.SetImageBytes(pixels.tobytes(), pixels.width, pixels.height, depth, pixels.width * depth)
        # Tesseract's own progress monitor cancels recognition at the deadline (layout analysis may run over).
        if not api.Recognize(timeout=max(1, int(remaining * 1000))):
            raise OcrTimeout(f"tesserocr stopped at the wall-clock backstop of {deadline.wall_seconds:g} s "
                             f"(ocr.timeout_s={deadline.seconds:g} x ocr.wall_timeout_factor)")
        deadline.check("tesserocr")
        return parse_tesseract_data(parse_tsv(api.GetTSVText(0)))
