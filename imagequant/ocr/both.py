"""The ``both`` engine: RapidOCR and Tesseract on the same image, their tokens merged."""

from __future__ import annotations

from PIL import Image

from imagequant.config import ImagingConfig, OcrConfig
from imagequant.core.tokens import OcrToken
from imagequant.ocr.base import Deadline, OcrEngine, Reading, WantsMore
from imagequant.ocr.merging import merge_tokens
from imagequant.ocr.rapidocr import RapidOcrEngine
from imagequant.ocr.tesseract import TesseractEngine


class BothEngine(OcrEngine):
    """RapidOCR and Tesseract on the same image under one deadline, merged (RapidOCR's lines are the
    primary ones); each runs its own passes."""

    name = "both"

    def __init__(self, cfg: OcrConfig, imaging: ImagingConfig) -> None:
        super().__init__(cfg, imaging)
        self.rapid = RapidOcrEngine(cfg, imaging)
        self.tess = TesseractEngine(cfg, imaging)

    def describe_device(self) -> str:
        return f"{self.rapid.describe_device()}+tesseract:cpu"

    def read_with_deadline(self, img: Image.Image, deadline: Deadline, wants_more: WantsMore | None = None,
                           upright: list[OcrToken] | None = None) -> Reading:
        first = self.rapid.read_with_deadline(img, deadline, wants_more, upright)  # an upright pass is RapidOCR's
        second = self.tess.read_with_deadline(img, deadline, wants_more)
        passes = [*(f"rapidocr:{p}" for p in first.passes), *(f"tesseract:{p}" for p in second.passes)]
        return Reading(merge_tokens(first.tokens, second.tokens), passes)
