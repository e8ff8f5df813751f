"""The rule baseline: score candidates with general evidence about packaging text, no training needed.

The score is a sum of log-odds-like terms: the unit's share among the entity's labels (CHALLENGE.md),
whether the value is plausible for the entity, text size, a nearby keyword, recurrence of the same
quantity, and for dimensions the printed letter (W/H/D), the position in an ``a x b x c`` group or the
place of the label in a drawing (width under the object, depth right of it, height beside it).
:func:`choose` squashes the best score to 0..1 so it can be thresholded for abstaining.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from imagequant.candidates import Candidate
from imagequant.units import ENTITY_UNITS

# Share of each unit among the entity's training labels (CHALLENGE.md statistics and the public
# train labels); units absent from the statistics get a small floor.
UNIT_PRIORS: dict[str, dict[str, float]] = {
    "item_weight": {
        "gram": 0.62,
        "kilogram": 0.12,
        "pound": 0.08,
        "ounce": 0.08,
        "milligram": 0.07,
        "microgram": 0.01,
        "ton": 0.005,
    },
    "maximum_weight_recommendation": {
        "kilogram": 0.41,
        "pound": 0.31,
        "gram": 0.13,
        "ton": 0.07,
        "ounce": 0.045,
        "milligram": 0.015,
        "microgram": 0.007,
    },
    "voltage": {"volt": 0.97, "kilovolt": 0.02, "millivolt": 0.01},
    "wattage": {"watt": 0.97, "kilowatt": 0.03},
    "item_volume": {
        "millilitre": 0.47,
        "fluid ounce": 0.27,
        "litre": 0.12,
        "gallon": 0.025,
        "cubic inch": 0.02,
        "pint": 0.015,
        "quart": 0.015,
        "decilitre": 0.013,
        "cup": 0.011,
        "cubic foot": 0.007,
        "centilitre": 0.005,
        "imperial gallon": 0.002,
        "microlitre": 0.002,
    },
    **{
        dim: {
            "centimetre": 0.50,
            "inch": 0.34,
            "millimetre": 0.14,
            "metre": 0.012,
            "foot": 0.01,
            "yard": 0.001,
        }
        for dim in ("width", "depth", "height")
    },
}
_PRIOR_FLOOR = 0.001

# Plausible magnitudes per entity in base units (gram, volt, watt, millilitre, metre): (low, high).
PLAUSIBLE_BASE: dict[str, tuple[float, float]] = {
    "item_weight": (0.01, 500_000.0),
    "maximum_weight_recommendation": (100.0, 50_000_000.0),
    "voltage": (0.5, 50_000.0),
    "wattage": (0.1, 100_000.0),
    "item_volume": (0.5, 2_000_000.0),
    "width": (0.0001, 20.0),
    "depth": (0.0001, 20.0),
    "height": (0.0001, 20.0),
}
# The number as printed in its own unit: prefixed units are printed with numbers >= 1 ("0.2 kV" is
# really "200 V"), and nobody prints "5000 mm" for a product dimension.
PLAUSIBLE_PRINTED: dict[str, tuple[float, float]] = {
    "kilovolt": (1.0, 1000.0),
    "millivolt": (1.0, 1000.0),
    "kilowatt": (0.5, 1000.0),
    "microgram": (1.0, 100_000.0),
    "milligram": (0.5, 100_000.0),
    "ton": (0.1, 100.0),
    "millimetre": (0.05, 3000.0),
    "metre": (0.1, 50.0),
    "yard": (0.1, 100.0),
    "microlitre": (1.0, 100_000.0),
}

_DIM_LETTER_ENTITY = {"w": "width", "h": "height", "d": "depth", "l": "depth"}
_DIMENSIONS = ("width", "depth", "height")


def _position_bonus(c: Candidate, entity: str) -> float:
    """Conventions of "a x b x c" groups: width first, height last (W x D x H, L x W x H, W x H)."""
    if c.xgroup_pos < 0 or entity not in _DIMENSIONS:
        return 0.0
    last = c.xgroup_len - 1
    if entity == "width":
        return 0.6 if c.xgroup_pos == 0 else (0.2 if c.xgroup_len >= 3 and c.xgroup_pos == 1 else -0.2)
    if entity == "height":
        return 0.6 if c.xgroup_pos == last else -0.2
    # depth: the middle of a triple (W x D x H), or the first of a triple (L x W x H)
    if c.xgroup_len >= 3:
        return 0.4 if c.xgroup_pos == 1 else (0.2 if c.xgroup_pos == 0 else -0.3)
    return -0.1


def _drawing_bonus(c: Candidate, entity: str) -> float:
    """Where a drawing puts each measure: the width under the object (left of the bottom row), the depth
    along the receding edge (right of that row), the height beside the object, above the row."""
    if entity == "height":
        return 0.6 if c.beside_row else (-0.6 if c.row_left or c.row_right else 0.0)
    own, other = (c.row_left, c.row_right) if entity == "width" else (c.row_right, c.row_left)
    return 0.6 if own else (-0.6 if other or c.beside_row else 0.0)


def score_candidate(c: Candidate, entity: str, prior_weight: float = 0.7) -> float:
    """Evidence that ``c`` is the row's answer (higher is better; about -10..+10)."""
    if c.unit not in ENTITY_UNITS.get(entity, ()) or not c.value > 0 or not math.isfinite(c.value):
        return -math.inf
    prior = UNIT_PRIORS.get(entity, {}).get(c.unit, _PRIOR_FLOOR)
    # damped: the label statistics are over all images, while an image that prints "mg" is a supplement
    s = prior_weight * math.log(max(prior, _PRIOR_FLOOR))

    lo, hi = PLAUSIBLE_BASE.get(entity, (0.0, math.inf))
    if not lo <= c.base_value <= hi:
        s -= 3.0
    plo, phi = PLAUSIBLE_PRINTED.get(c.unit, (0.0, math.inf))
    if not plo <= c.value <= phi:
        s -= 2.0

    # prominent text is the headline quantity; log so a 3x taller number does not drown other evidence
    # (dimensions less: a drawing prints its measures in one size, or the longest one largest)
    s += (0.6 if entity in _DIMENSIONS else 1.2) * math.log(min(max(c.rel_height, 0.2), 8.0))
    if c.keyword:
        s += 1.5 if c.keyword_same_line or c.keyword_row else 1.0
    if c.keyword_other:
        s -= 1.5  # "Weight capacity 6 kg" when the item weight is asked
    s += 0.7 * math.log(min(c.recurrence, 6))
    if c.unit_inferred:
        s -= 3.0  # a bare number is a guess (only emitted when the image has no unit mention at all)
    elif not c.unit_explicit:
        s -= 0.3
    s += 0.3 * (c.conf - 0.5)
    s -= 0.05 * min(c.rank, 10)  # mild preference for what comes first
    if c.ocr_fixed:
        s -= 0.3
    if c.leading_zero:
        s -= 1.5  # "02296 g", "06g": a digit lost or a stray mark read as 0, not a printed quantity
    if c.fraction:
        s -= 0.2
    if c.in_parens:
        s -= 0.2

    if c.dual_secondary:
        s -= 1.0  # "6.7in / 17cm", "17.6 oz (500 g)": the conversion follows the primary unit
    if c.range_low:
        s -= 0.8  # "100-240V" is labelled with its upper end
    if c.range_high:
        s += 0.2

    if entity in _DIMENSIONS:
        if c.dim_letter:
            s += 1.5 if _DIM_LETTER_ENTITY[c.dim_letter] == entity else -1.0
        elif c.xgroup_pos >= 0:
            s += _position_bonus(c, entity)
        else:
            s += _drawing_bonus(c, entity)
        if c.angle % 180 == 90:
            # rotated text along a vertical edge measures a height, almost never a width or depth
            s += 0.5 if entity == "height" else -1.0
    elif c.xgroup_pos >= 0 and c.xgroup_pos < c.xgroup_len - 1:
        s -= 0.5  # "2 x 500g": the count, not the quantity
    return s


def confidence(raw_score: float) -> float:
    """Squash a raw score into 0..1 for thresholding (monotone, so thresholds transfer)."""
    if raw_score == -math.inf:
        return 0.0
    return 1.0 / (1.0 + math.exp(-(raw_score + 1.0) / 2.0))


def choose(candidates: Sequence[Candidate], entity: str) -> tuple[Candidate | None, float]:
    """The best-scoring candidate and its confidence (0..1), or (None, 0.0) when there is none."""
    best: Candidate | None = None
    best_score = -math.inf
    for c in candidates:
        s = score_candidate(c, entity)
        if s > best_score:
            best, best_score = c, s
    if best is None:
        return None, 0.0
    return best, confidence(best_score)


def first_candidate(candidates: Sequence[Candidate]) -> Candidate | None:
    """The reference rule: the first mention (reading order) with a unit allowed for the entity."""
    return min(candidates, key=lambda c: c.rank) if candidates else None
