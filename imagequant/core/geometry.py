"""Dimension-drawing geometry: which drawn line a printed measure labels, and which way that line runs.

A drawing prints each measure beside the line it measures, centred on it: the height beside a vertical
line, the width under a long horizontal one, the depth along a receding diagonal (or, in side and plan
views, a second horizontal or vertical). The line segments come from the image (``imaging.line_segments``,
stored in the images table as flat ``x1, y1, x2, y2`` quadruples in original-image pixels); this module
links a text box to the segment it labels. Framework-free: plain floats, no image library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Segment = tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels

# Orientation classes. Floor lines in perspective run at 8-14 degrees and still read as horizontal.
HORIZONTAL, VERTICAL, DIAGONAL = "horizontal", "vertical", "diagonal"
ORIENTATIONS = (HORIZONTAL, VERTICAL, DIAGONAL)
_AXIS_TOLERANCE_DEG = 15.0

# A label sits within this many text heights of its line, and the line is at least this many text heights
# long (shorter strokes are the glyphs and arrow heads themselves).
_MAX_GAP_HEIGHTS = 2.0
_MIN_LENGTH_HEIGHTS = 2.0
# How far along the line (0 = one end, 1 = the other) the label's centre may project: just past the ends.
_ALONG_SLACK = 0.05


@dataclass(frozen=True)
class LineLink:
    """The segment a text box labels."""

    orientation: str  # HORIZONTAL, VERTICAL or DIAGONAL
    length: float  # the segment's length as a share of the image's longer side
    gap: float  # distance from the text box to the line, in text heights
    along: float  # where the label's centre projects on the segment, 0..1 (0.5: centred)


def segments_from_flat(values: Sequence[float] | None) -> list[Segment]:
    """The stored flat ``x1, y1, x2, y2, ...`` list as segments (an incomplete tail is dropped)."""
    if values is None or isinstance(values, float):  # null, or NaN from a pandas frame
        return []
    flat = [float(v) for v in values]
    return [(flat[i], flat[i + 1], flat[i + 2], flat[i + 3]) for i in range(0, len(flat) - 3, 4)]


def orientation(segment: Segment) -> str:
    x1, y1, x2, y2 = segment
    degrees = abs(math.degrees(math.atan2(y2 - y1, x2 - x1))) % 180.0
    if degrees <= _AXIS_TOLERANCE_DEG or degrees >= 180.0 - _AXIS_TOLERANCE_DEG:
        return HORIZONTAL
    if abs(degrees - 90.0) <= _AXIS_TOLERANCE_DEG:
        return VERTICAL
    return DIAGONAL


def labelled_line(
    box: tuple[float, float, float, float],
    text_height: float,
    segments: Sequence[Segment],
    image_size: tuple[int, int],
) -> LineLink | None:
    """The segment that the text in ``box`` (left, top, width, height) most plausibly labels: near the box
    (gap under two text heights), long enough not to be part of the glyphs, and with the box's centre
    projecting onto it; among those, the nearest, preferring one the label is centred on. None without one.
    ``text_height`` is the height of the printed characters (the box's short side for rotated text)."""
    left, top, width, height = box
    cx, cy = left + width / 2.0, top + height / 2.0
    th = max(4.0, text_height)
    longer_side = float(max(1, image_size[0], image_size[1]))
    best: LineLink | None = None
    best_cost = math.inf
    for seg in segments:
        x1, y1, x2, y2 = seg
        dx, dy = x2 - x1, y2 - y1
        length = math.hypot(dx, dy)
        if length < _MIN_LENGTH_HEIGHTS * th:
            continue
        along = ((cx - x1) * dx + (cy - y1) * dy) / (length * length)
        if not -_ALONG_SLACK <= along <= 1.0 + _ALONG_SLACK:
            continue
        distance = abs((cx - x1) * dy - (cy - y1) * dx) / length
        # the box's half extent across the line: a label beside its line is measured from its edge
        half_across = (abs(dy) * width + abs(dx) * height) / (2.0 * length)
        gap = max(0.0, distance - half_across) / th
        if gap > _MAX_GAP_HEIGHTS:
            continue
        cost = gap + abs(along - 0.5)
        if cost < best_cost:
            best_cost = cost
            best = LineLink(orientation(seg), length / longer_side, gap, along)
    return best
