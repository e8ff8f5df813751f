"""Box arithmetic of core.tokens that the OCR passes use to tell lines apart."""

from __future__ import annotations

from imagequant.core.tokens import OcrToken, box_iou, box_overlap, line_boxes


def _token(text: str, left: int, top: int, width: int, height: int, line: int) -> OcrToken:
    return OcrToken(text=text, conf=90.0, left=left, top=top, width=width, height=height, block=0, line=line, word=0)


def test_iou_is_high_only_for_coinciding_boxes() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == 50 / 150
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    # a box inside another: overlap says they belong together, IoU that they are not the same line
    assert box_overlap((0, 0, 100, 20), (10, 5, 10, 10)) == 1.0 and box_iou((0, 0, 100, 20), (10, 5, 10, 10)) == 0.05


def test_line_boxes_hold_each_lines_words() -> None:
    tokens = [_token("NET", 10, 12, 30, 10, 0), _token("500g", 45, 10, 40, 14, 0), _token("12V", 5, 50, 20, 8, 3)]
    assert line_boxes(tokens) == [(10, 10, 75, 14), (5, 50, 20, 8)]
    assert line_boxes([]) == []
