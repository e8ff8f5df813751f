"""OCR tokens and box geometry: what every engine returns and every later step reads.

Pure data and arithmetic: no image library, so the text and scoring steps load without PIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Box = tuple[int, int, int, int]  # left, top, width, height


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


def token_box(t: OcrToken) -> Box:
    return (t.left, t.top, t.width, t.height)


def _intersection(a: Box, b: Box) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union: high only when two boxes coincide."""
    inter = _intersection(a, b)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def box_overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller area: high when boxes coincide or one holds the other (never below the IoU,
    since the union is at least the smaller area)."""
    inter = _intersection(a, b)
    return inter / float(min(a[2] * a[3], b[2] * b[3])) if inter else 0.0


def line_boxes(tokens: Sequence[OcrToken]) -> list[Box]:
    """The box around each line's tokens (tokens of one ``line`` id)."""
    lines: dict[int, list[OcrToken]] = {}
    for t in tokens:
        lines.setdefault(t.line, []).append(t)
    out = []
    for words in lines.values():
        left, top = min(t.left for t in words), min(t.top for t in words)
        out.append((left, top, max(t.left + t.width for t in words) - left, max(t.top + t.height for t in words) - top))
    return out


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


def scale_box(box: Box, scale: float, bounds: tuple[int, int]) -> Box:
    """Divides a box by ``scale`` (prepared -> original pixels) and clips it to ``bounds`` (width, height)."""
    left = max(0, int(round(box[0] / scale)))
    top = max(0, int(round(box[1] / scale)))
    right = min(bounds[0], int(round((box[0] + box[2]) / scale)))
    bottom = min(bounds[1], int(round((box[1] + box[3]) / scale)))
    return (left, top, max(1, right - left), max(1, bottom - top))


def ocr_text(tokens: Sequence[OcrToken]) -> str:
    """Tokens joined by spaces within a line and newlines between lines, in reading order."""
    lines: list[str] = []
    current_line: int | None = None
    for token in tokens:
        if current_line is not None and token.line == current_line:
            lines[-1] += " " + token.text
        else:
            lines.append(token.text)
        current_line = token.line
    return "\n".join(lines)


def image_size_of(tokens: Sequence[OcrToken], width: int, height: int) -> tuple[int, int]:
    """The decoded size, or (when unknown) the extent of the tokens, so relative positions stay in 0..1."""
    if width > 0 and height > 0:
        return width, height
    right = max((t.left + t.width for t in tokens), default=1)
    bottom = max((t.top + t.height for t in tokens), default=1)
    return max(1, right), max(1, bottom)
