"""Candidate evidence as a fixed-length vector of numbers, for the learned scorer."""

from __future__ import annotations

import math

from imagequant.core.units import ALL_UNITS
from imagequant.text.candidates import Candidate

_UNIT_INDEX = {u: i for i, u in enumerate(ALL_UNITS)}
_DIM_LETTERS = ("w", "h", "d", "l")
_SCALAR_FEATURES = 46 + len(_DIM_LETTERS)
CANDIDATE_FEATURE_DIM = _SCALAR_FEATURES + len(ALL_UNITS)


def candidate_features(c: Candidate) -> list[float]:
    """Fixed-length numeric evidence about one candidate (length CANDIDATE_FEATURE_DIM), each about 0..1."""

    def clip(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
        return min(hi, max(lo, x))

    value = max(c.value, 1e-9)
    base = max(c.base_value, 1e-12)
    xpos = c.xgroup_pos
    feats = [
        clip(math.log10(value) / 4.0, -1.0, 1.5),  # magnitude of the printed number
        clip(math.log10(base) / 6.0, -2.0, 2.0),  # magnitude in base units
        1.0 if float(c.value).is_integer() else 0.0,
        clip(c.rel_height / 4.0),
        clip(math.log2(max(c.rel_height, 1e-3)) / 3.0, -1.0, 1.0),
        c.rel_x,
        c.rel_y,
        clip(c.conf),
        clip((c.recurrence - 1) / 4.0),
        float(c.keyword),
        float(c.keyword_same_line),
        float(c.unit_explicit),
        float(c.unit_shared),
        float(c.glued),
        float(c.in_parens),
        float(c.ocr_fixed),
        float(c.fraction),
        float(c.range_low),
        float(c.range_high),
        float(c.dual_primary),
        float(c.dual_secondary),
        float(c.unit_inferred),
        float(c.leading_zero),
        1.0 if xpos >= 0 else 0.0,
        clip(xpos / 2.0) if xpos >= 0 else 0.0,
        1.0 if xpos >= 0 and xpos == c.xgroup_len - 1 else 0.0,
        float(c.angle % 360 != 0),
        clip(c.rank / 10.0),
        float(c.rank == 0),
        clip(math.log2(max(c.n_candidates, 1)) / 5.0),
        *(1.0 if c.dim_letter == letter else 0.0 for letter in _DIM_LETTERS),
        c.size_order,
        float(c.size_order == 0.0),
        float(c.size_order == 1.0),
        float(c.lowest),
        float(c.highest),
        float(c.leftmost),
        float(c.rightmost),
        float(c.row_left),
        float(c.row_right),
        float(c.beside_row),
        float(c.keyword_row),
        float(c.keyword_other),
        float(c.line_orientation == "horizontal"),
        float(c.line_orientation == "vertical"),
        float(c.line_orientation == "diagonal"),
        clip(c.line_length),
    ]
    assert len(feats) == _SCALAR_FEATURES
    unit_hot = [0.0] * len(ALL_UNITS)
    if c.unit in _UNIT_INDEX:
        unit_hot[_UNIT_INDEX[c.unit]] = 1.0
    return feats + unit_hot
