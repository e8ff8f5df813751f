"""Image decoding and the two preprocessing paths: one for OCR, one for the CNN.

``decode_image`` turns untrusted bytes into an 8-bit RGB image or raises a typed ``ImageError``. It never
trusts the file: the declared pixel count is checked before any pixel is decoded, truncated files are
errors (not gray-filled), and every Pillow mode is brought to RGB in a way that keeps text readable
(transparent backgrounds become white, 16-bit and float images are scaled to 8 bits).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import re
import struct
import threading
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from imagequant.errors import RecordedError

log = logging.getLogger(__name__)

IMAGE_ERROR_KINDS = ("decode_error", "truncated", "pixel_bomb", "empty", "blank_image")

#: imaging.max_pixels' default: the most pixels one image may have, decoded or after any resize step.
DEFAULT_MAX_PIXELS = 60_000_000

# The formats the fetcher accepts (fetch.image_format). Others (ICO, ICNS, ...) may decode an embedded image
# larger than the size their header declares, which would slip past the header check.
_DECODE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF")


@functools.cache
def _open_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in _DECODE_FORMATS if f in Image.OPEN)  # MPO opens through JPEG in some versions

# Modes that carry an alpha channel; they are composited on white because product text is usually dark
# on a transparent (meant-to-be-white) background, and dropping alpha would turn that background black.
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


# Pillow's process-wide decompression-bomb check (Image.MAX_IMAGE_PIXELS) refuses images over twice its value
# inside Image.open, before our own check can run, and warns above it. imaging.max_pixels decides instead:
# Pillow's limit is raised to it when lower (never lowered), and its warning, which the refusal right after
# the header makes redundant, is silenced.
_PILLOW_LIMIT_LOCK = threading.Lock()
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _let_setting_decide(max_pixels: int) -> None:
    """Raises Pillow's MAX_IMAGE_PIXELS so that its hard refusal (over twice the value) never comes before ours."""
    with _PILLOW_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and 2 * limit < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _too_many_pixels(exc: Image.DecompressionBombError, max_pixels: int) -> ImageError:
    """Pillow's refusal (an image far over its own limit) told with the configured limit, not Pillow's."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{found.group(1)} pixels" if found else "more pixels than Pillow allows"
    return ImageError("pixel_bomb", f"{pixels} exceeds imaging.max_pixels={max_pixels}")


class ImageError(RecordedError):
    """An image that cannot be used."""

    KINDS = IMAGE_ERROR_KINDS


def _is_truncation(exc: BaseException) -> bool:
    """Whether a Pillow load error means the data ended early (vs. data that is corrupt)."""
    if isinstance(exc, EOFError):
        return True
    text = str(exc).lower()
    return "truncated" in text or "end of file" in text or "premature end" in text


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Maps a 16-bit, 32-bit or float single-channel array to uint8.

    The value range says what the data is: 0..1 floats are normalised intensities, <= 255 is 8-bit data
    in a wider container, <= 65535 is 16-bit data; anything else (negative, huge) is stretched min..max.
    """
    data = arr.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, 0.0)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0 and arr.dtype.kind == "f":
        out = data * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        out = data
    elif lo >= 0.0 and hi <= 65535.0:
        out = data / 257.0
    else:
        out = (data - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """Converts a loaded image of any Pillow mode to 8-bit RGB (alpha composited on white)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P" or mode == "PA":
        # A palette with a transparent index is only transparent after expansion to RGBA.
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("LA")
        mode = "LA"
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        # I;16 (16-bit PNG/TIFF), I;16B, I (32-bit int), F (float): Pillow's own convert("L") clips
        # instead of scaling, which turns most 16-bit images white.
        gray = _scale_to_uint8(np.asarray(im))
        return Image.fromarray(gray, mode="L").convert("RGB")
    # 1, L, CMYK (Pillow inverts Adobe CMYK JPEGs on decode), YCbCr, LAB, HSV.
    return im.convert("RGB")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decodes image bytes to an upright 8-bit RGB image or raises ``ImageError``.

    The pixel-count guard reads only the header (``Image.open`` is lazy) so a small file declaring a huge
    canvas is refused before any memory is allocated for it. It does not rely on Pillow's process-wide
    ``Image.MAX_IMAGE_PIXELS``: that is raised to ``max_pixels`` when lower, so the setting decides, and every
    pixel_bomb message quotes ``imaging.max_pixels``.
    Truncated files raise kind "truncated" as long as ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False,
    which this project never changes. Only the formats the fetcher accepts are opened.
    """
    if not data:
        raise ImageError("empty", "no image bytes")
    _let_setting_decide(max_pixels)
    try:
        im = Image.open(io.BytesIO(data), formats=_open_formats())
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(exc, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("decode_error", f"not a recognised image format ({len(data)} bytes)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = "truncated" if _is_truncation(exc) else "decode_error"
        raise ImageError(kind, f"cannot read image header: {exc}") from exc

    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError("empty", f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError("pixel_bomb",
                         f"{width}x{height} = {width * height} pixels exceeds imaging.max_pixels={max_pixels}")

    if ImageFile.LOAD_TRUNCATED_IMAGES:  # pragma: no cover - only if another library flipped it
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images will not be detected")
    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(exc, max_pixels) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        kind = "truncated" if _is_truncation(exc) else "decode_error"
        raise ImageError(kind, f"cannot decode {im.format or 'image'} pixels: {exc}") from exc
    if im.width * im.height > max_pixels:  # a decoder that grew the image past its header's size
        raise ImageError("pixel_bomb", f"decoded {im.width}x{im.height} exceeds imaging.max_pixels={max_pixels}")

    try:
        # Phone photos and some scans store the sensor orientation in EXIF; OCR needs upright text. In place:
        # otherwise Pillow copies every image, turned or not.
        ImageOps.exif_transpose(im, in_place=True)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must not lose an otherwise good image
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
    try:
        return to_rgb(im)
    except (OSError, ValueError) as exc:
        raise ImageError("decode_error", f"cannot convert mode {im.mode} to RGB: {exc}") from exc


def resize_target(
    size: tuple[int, int],
    *,
    scale: float | None = None,
    short_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    what: str = "resize",
) -> tuple[int, int]:
    """The (width, height) an image of ``size`` gets from one resize step; raises ``ImageError``
    ("pixel_bomb") when that would exceed ``max_pixels``, before any pixel is allocated.

    ``scale``: both sides times the factor, rounded, at least 1 px each (the OCR and detector resizes).
    ``short_side``: the short side becomes ``short_side`` and the long side keeps the aspect ratio,
    truncated, as torchvision's ``Resize(int)`` computes it (the CNN resize). An image within the decode
    limit can still explode here: 2 x 20,000,000 pixels brought to a 256 px short side is 256 x 2.56e9.
    """
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError("empty", f"cannot {what} an image of {width}x{height} pixels")
    if (scale is None) == (short_side is None):
        raise ValueError("give exactly one of scale and short_side")
    if scale is not None:
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"{what}: scale must be a positive finite number, got {scale!r}")
        exact_w, exact_h = width * scale, height * scale
        if not math.isfinite(exact_w * exact_h) or exact_w * exact_h > 2.0 * max_pixels + 1e6:
            # Far over the bound: refused before rounding (which cannot take an infinite size).
            raise ImageError("pixel_bomb", f"{what} of {width}x{height} by {scale:g} would exceed {max_pixels} pixels")
        new_w, new_h = max(1, round(exact_w)), max(1, round(exact_h))
    else:
        assert short_side is not None
        if short_side <= 0:
            raise ValueError(f"{what}: short_side must be positive, got {short_side!r}")
        if width <= height:
            new_w, new_h = short_side, int(short_side * height / width)
        else:
            new_w, new_h = int(short_side * width / height), short_side
    if new_w * new_h > max_pixels:
        raise ImageError(
            "pixel_bomb",
            f"{what} of {width}x{height} to {int(new_w)}x{int(new_h)} would exceed {max_pixels} pixels",
        )
    return int(new_w), int(new_h)


def ocr_scale(size: tuple[int, int], min_side: int, max_side: int, max_upscale: float = 4.0) -> float:
    """The resize factor prepare_for_ocr applies to an image of ``size`` (width, height)."""
    short, long = min(size), max(size)
    if short <= 0:
        return 1.0
    scale = 1.0
    if short < min_side:
        # Small images carry small text; Tesseract reads best at ~30 px x-height, so enlarge them.
        scale = min(min_side / short, max_upscale)
    # The long-side cap wins over the upscale (OCR cost grows with area) and also shrinks huge originals.
    return min(scale, max_side / long)


def prepare_for_ocr(
    img: Image.Image, min_side: int = 1000, max_side: int = 2400, max_upscale: float = 4.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Image.Image, float]:
    """Resizes an RGB image for OCR; returns (image, scale) where OCR box / scale = original pixels.

    Images whose short side is under ``min_side`` are enlarged (LANCZOS, at most ``max_upscale`` times);
    images whose long side is over ``max_side`` are reduced. The long-side cap wins over the upscale.
    A result over ``max_pixels`` raises ImageError("pixel_bomb").
    """
    scale = ocr_scale(img.size, min_side, max_side, max_upscale)
    if abs(scale - 1.0) < 1e-3:
        return img, 1.0
    new_size = resize_target(img.size, scale=scale, max_pixels=max_pixels, what="OCR resize")
    resample = Image.Resampling.LANCZOS if scale > 1.0 else Image.Resampling.BOX
    # Report the scale actually applied (rounding moves it slightly) so boxes map back exactly.
    return img.resize(new_size, resample), new_size[0] / img.width


def prepare_for_cnn(img: Image.Image, size: int = 224, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The torchvision eval transform without normalisation: resize short side to size*256/224, centre crop.

    Returns a uint8 array of shape (size, size, 3). Normalisation is the CNN module's job. A resized image
    over ``max_pixels`` (a very tall or wide image) raises ImageError("pixel_bomb") before resizing.
    """
    resize_to = int(round(size * 256 / 224))
    # Same arithmetic as torchvision.transforms.functional.resize with an int size.
    new_w, new_h = resize_target(img.size, short_side=resize_to, max_pixels=max_pixels, what="CNN resize")
    if img.mode != "RGB":
        img = to_rgb(img)
    resized = img.resize((max(new_w, size), max(new_h, size)), Image.Resampling.BILINEAR, reducing_gap=None)
    rw, rh = resized.size
    left = int(round((rw - size) / 2.0))
    top = int(round((rh - size) / 2.0))
    cropped = resized.crop((left, top, left + size, top + size))
    arr = np.asarray(cropped, dtype=np.uint8)
    return np.ascontiguousarray(arr)


# An image is blank when, in every channel, fewer than BLANK_MAX_INK_PIXELS pixels differ from the channel's
# most common level by more than BLANK_TOLERANCE: less ink than one small character, so nothing OCR could read
# as a value with its unit. Counted on the full-resolution histogram (a downscaled copy would average a small
# label away): about 3.3 ns per pixel, 4 ms for a typical 1000 px product image.
BLANK_TOLERANCE = 32
BLANK_MAX_INK_PIXELS = 24


def check_not_blank(img: Image.Image) -> None:
    """Raises ImageError ("blank_image") for a blank or uniform image (:data:`BLANK_MAX_INK_PIXELS`): OCR would
    find nothing on it, and on a large canvas it would spend its whole budget doing so."""
    histogram = img.histogram()  # 256 counts per band, computed in C over every pixel; no copy of the image
    ink = 0
    levels = []
    for band in range(len(histogram) // 256):
        counts = histogram[band * 256 : (band + 1) * 256]
        level = max(range(256), key=counts.__getitem__)
        near = sum(counts[max(0, level - BLANK_TOLERANCE) : level + BLANK_TOLERANCE + 1])
        ink = max(ink, sum(counts) - near)
        levels.append(level)
    if ink < BLANK_MAX_INK_PIXELS:
        raise ImageError(
            "blank_image",
            f"{img.width}x{img.height} image is uniform ({ink} pixels differ from the background level "
            f"{tuple(levels)} by more than {BLANK_TOLERANCE}): nothing to read, OCR not run",
        )


# Dimension lines are found on a copy whose longer side is at most this (finer detail adds glyph strokes,
# not lines), and only segments at least this share of the longer side are kept, the longest first.
SEGMENT_DETECT_SIDE = 1000
SEGMENT_MIN_SHARE = 0.03
SEGMENT_MAX_COUNT = 300


def line_segments(img: Image.Image) -> list[float]:
    """Straight line segments of the image (OpenCV's line segment detector on the grayscale), as a flat
    ``x1, y1, x2, y2, ...`` list in original-image pixels rounded to 0.1 px: what dimension drawings are
    read by (``imagequant.core.geometry``). About 0.06 CPU s for a 1500 px image."""
    import cv2

    scale = min(1.0, SEGMENT_DETECT_SIDE / max(1, max(img.size)))
    gray = img.convert("L")
    if scale < 1.0:
        gray = gray.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                           Image.Resampling.BOX)
    found = cv2.createLineSegmentDetector().detect(np.asarray(gray))[0]
    if found is None:
        return []
    segments = found.reshape(-1, 4).astype(np.float64) / scale
    lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    keep = np.argsort(-lengths, kind="stable")[: SEGMENT_MAX_COUNT]
    keep = keep[lengths[keep] >= SEGMENT_MIN_SHARE * max(img.size)]
    return [round(float(v), 1) for v in segments[keep].reshape(-1)]
