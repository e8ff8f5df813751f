"""The rule baseline: score candidates with general evidence about packaging text, no training needed.

The score is a sum of log-odds-like terms: the unit's share among the entity's labels (the entity table),
whether the value is plausible for the entity, text size, a nearby keyword, recurrence of the same
quantity, and for dimensions the printed letter (W/H/D), the position in an ``a x b x c`` group or the
place of the label in a drawing (width under the object, depth right of it, height beside it): the entity
table says which of these conventions each length follows, and this module how much each is worth.
:func:`choose` squashes the best score to 0..1 so it can be thresholded for abstaining.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from imagequant.core.entities import ENTITY_SPECS, EntitySpec
from imagequant.text.candidates import Candidate

_PRIOR_FLOOR = 0.001  # the prior of a unit absent from the entity's label statistics

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

def _position_bonus(c: Candidate, spec: EntitySpec) -> float:
    """Conventions of "a x b x c" groups, by the length's group position (the entity table): the first
    (W x D x H, L x W x H, W x H), the last (W x D x H, W x H), or the middle of a triple (W x D x H; else
    the first of a triple, L x W x H)."""
    if c.xgroup_pos < 0:
        return 0.0
    last = c.xgroup_len - 1
    if spec.group_position == "first":
        return 0.6 if c.xgroup_pos == 0 else (0.2 if c.xgroup_len >= 3 and c.xgroup_pos == 1 else -0.2)
    if spec.group_position == "last":
        return 0.6 if c.xgroup_pos == last else -0.2
    if spec.group_position == "middle":
        if c.xgroup_len >= 3:
            return 0.4 if c.xgroup_pos == 1 else (0.2 if c.xgroup_pos == 0 else -0.3)
        return -0.1
    raise ValueError(f"entity {spec.name!r} has no group position")


def _drawing_bonus(c: Candidate, spec: EntitySpec) -> float:
    """Where a drawing puts the length's label, by its drawing role (the entity table): under the object
    (left of the bottom row), along the receding edge (right of that row), or beside the object, above
    the row."""
    if spec.drawing_role == "beside":
        return 0.6 if c.beside_row else (-0.6 if c.row_left or c.row_right else 0.0)
    if spec.drawing_role not in ("below", "receding"):
        raise ValueError(f"entity {spec.name!r} has no drawing role")
    own, other = (c.row_left, c.row_right) if spec.drawing_role == "below" else (c.row_right, c.row_left)
    return 0.6 if own else (-0.6 if other or c.beside_row else 0.0)


def _plausible_magnitude(c: Candidate, entity: str) -> bool:
    lo, hi = ENTITY_SPECS[entity].plausible_base
    return lo <= c.base_value <= hi


def _plausible_printed(c: Candidate) -> bool:
    lo, hi = PLAUSIBLE_PRINTED.get(c.unit, (0.0, math.inf))
    return lo <= c.value <= hi


def plausible(c: Candidate, entity: str) -> bool:
    """Whether ``c`` could be the row's answer at all: a printed unit of the entity and a magnitude that
    fits it. An image whose candidates for an asked-for entity are all implausible gets a second look."""
    spec = ENTITY_SPECS.get(entity)
    return (spec is not None and c.unit in spec.units and c.value > 0 and math.isfinite(c.value)
            and not c.unit_inferred and _plausible_magnitude(c, entity) and _plausible_printed(c))


# Evidence of the line a label sits on, by the way the length's line runs (the entity table's
# line_orientation; from the share of each among real drawings' labels: heights are drawn vertical, widths
# horizontal; depths run any way, a diagonal most often in perspective).
_LINE_TERMS: dict[str, dict[str, float]] = {
    "vertical": {"vertical": 1.0, "horizontal": -1.0, "diagonal": -0.5},
    "horizontal": {"horizontal": 1.0, "vertical": -1.0, "diagonal": -0.5},
    "diagonal": {"diagonal": 1.0, "vertical": -0.5, "horizontal": 0.0},
}


# Which end of an image's sizes a length takes in catalog labels (the entity table's size_end): of the
# challenge's training images labelled with a depth and another measure that differ, the depth is the
# largest in 2,350 and the smallest in 638; the width is the smallest in 2,909 and the largest in 1,102;
# the height either about equally. A tie-breaker only (from +w for the largest to -w for the smallest):
# where the drawing shows which line a label measures, the line decides.
_SIZE_TERMS: dict[str, float] = {"largest": 0.2, "smallest": -0.2, "": 0.0}

# Rotated text along a vertical edge measures the length whose rotated_text is set, almost never another.
_ROTATED_OWN, _ROTATED_OTHER = 0.5, -1.0


def _size_bonus(c: Candidate, spec: EntitySpec) -> float:
    """The larger quantities of an image for a length taking the largest end, the smaller ones for one
    taking the smallest (0 for one quantity, and in an "a x b x c" group, which keeps its position rule)."""
    if c.xgroup_len >= 3:
        return 0.0
    return _SIZE_TERMS[spec.size_end] * (1.0 - 2.0 * c.size_order)


def _line_bonus(c: Candidate, spec: EntitySpec) -> float:
    """The drawn line the label sits beside: one running the length's way speaks for it."""
    return _LINE_TERMS[spec.line_orientation].get(c.line_orientation, 0.0)


def score_candidate(c: Candidate, entity: str, prior_weight: float = 0.7) -> float:
    """Evidence that ``c`` is the row's answer (higher is better; about -10..+10)."""
    spec = ENTITY_SPECS.get(entity)
    if spec is None or c.unit not in spec.units or not c.value > 0 or not math.isfinite(c.value):
        return -math.inf
    prior = spec.unit_prior.get(c.unit, _PRIOR_FLOOR)
    # damped: the label statistics are over all images, while an image that prints "mg" is a supplement
    s = prior_weight * math.log(max(prior, _PRIOR_FLOOR))

    if not _plausible_magnitude(c, entity):
        s -= 3.0
    if not _plausible_printed(c):
        s -= 2.0

    # prominent text is the headline quantity; log so a 3x taller number does not drown other evidence
    # (dimensions less: a drawing prints its measures in one size, or the longest one largest)
    s += (0.6 if spec.dimension else 1.2) * math.log(min(max(c.rel_height, 0.2), 8.0))
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

    if spec.dimension:
        if c.dim_letter:
            s += 1.5 if c.dim_letter in spec.letters else -1.0
        elif c.xgroup_pos >= 0:
            s += _position_bonus(c, spec)
        else:
            s += _drawing_bonus(c, spec) + _line_bonus(c, spec)
        if c.angle % 180 == 90:
            s += _ROTATED_OWN if spec.rotated_text else _ROTATED_OTHER
        s += _size_bonus(c, spec)
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


# The vocabulary of :func:`reasons`, in the order they are listed (docs/predictions.md "Reasons").
REASONS: tuple[str, ...] = (
    "keyword", "keyword_line", "keyword_row", "dim_letter:<letter>", "xgroup:first", "xgroup:middle",
    "xgroup:last", "drawing:row_left", "drawing:row_right", "drawing:beside_row", "line:horizontal",
    "line:vertical", "line:diagonal", "drawing:vertical", "size:largest", "size:smallest",
    "unit_prior", "prominent", "recurrence", "dual_primary", "range_high", "only_candidate", "first_mention",
)
_COMMON_UNIT = 0.2  # a unit this common among the entity's labels is itself evidence (unit_prior)
_PROMINENT = 1.5  # text this much taller than the image's median token is its headline (prominent)


def reasons(c: Candidate, entity: str) -> list[str]:
    """The evidence terms of :func:`score_candidate` that speak for ``c``, named in the :data:`REASONS`
    vocabulary and in that order: what a reviewer checks first. Penalties are not listed (they explain why
    other candidates lost, not why this one won). Framework-free, so inference and explain share it."""
    spec = ENTITY_SPECS.get(entity)
    if spec is None:
        return []
    out: list[str] = []
    if c.keyword:
        out.append("keyword")
        if c.keyword_same_line:
            out.append("keyword_line")
        if c.keyword_row:
            out.append("keyword_row")
    if spec.dimension:
        if c.dim_letter:
            if c.dim_letter in spec.letters:
                out.append(f"dim_letter:{c.dim_letter}")
        elif c.xgroup_pos >= 0:
            if _position_bonus(c, spec) > 0:
                last = c.xgroup_len - 1
                out.append("xgroup:first" if c.xgroup_pos == 0 else "xgroup:last" if c.xgroup_pos == last
                           else "xgroup:middle")
        else:
            if _drawing_bonus(c, spec) > 0:
                out.append("drawing:beside_row" if c.beside_row else "drawing:row_left" if c.row_left
                           else "drawing:row_right")
            if _line_bonus(c, spec) > 0:
                out.append(f"line:{c.line_orientation}")
        if c.angle % 180 == 90 and spec.rotated_text:
            out.append("drawing:vertical")
        if _size_bonus(c, spec) > 0 and c.size_order in (0.0, 1.0):
            out.append("size:largest" if c.size_order == 0.0 else "size:smallest")
    if not c.unit_inferred and spec.unit_prior.get(c.unit, 0.0) >= _COMMON_UNIT:
        out.append("unit_prior")
    if c.rel_height >= _PROMINENT:
        out.append("prominent")
    if c.recurrence >= 2:
        out.append("recurrence")
    if c.dual_primary:
        out.append("dual_primary")
    if c.range_high:
        out.append("range_high")
    if c.n_candidates == 1:
        out.append("only_candidate")
    elif c.rank == 0:
        out.append("first_mention")
    return out
