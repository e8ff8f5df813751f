"""OCR engines behind one contract (:mod:`imagequant.ocr.base`) and one registry (:mod:`imagequant.ocr.zoo`).

``get_engine(cfg.ocr, cfg.imaging).read(img) -> list[OcrToken]``: every engine returns word tokens whose
boxes are in the pixel coordinates of the image passed to ``read``. This package file imports nothing,
so configuration validation can read the registry without loading an image library.
"""
