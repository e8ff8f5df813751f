"""One catalog row's evidence from its image's stored record: tokens -> image size -> candidates.

Training, inference and evaluation all see a row through :func:`row_evidence`, so the three read the
same candidates from the same stored tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagequant.core.geometry import Segment, segments_from_flat
from imagequant.core.schema import EVIDENCE_COLUMN_NAMES, tokens_from_record
from imagequant.core.tokens import OcrToken, image_size_of
from imagequant.text.candidates import Candidate, extract_candidates


@dataclass
class RowEvidence:
    tokens: list[OcrToken]
    image_size: tuple[int, int]
    candidates: list[Candidate]
    segments: list[Segment]


def image_tokens(record: Mapping[str, Any]) -> tuple[list[OcrToken], tuple[int, int]]:
    """The stored tokens of an image record and its size (the tokens' extent when the size is unknown)."""
    tokens = tokens_from_record(record)
    return tokens, image_size_of(tokens, int(record.get("width") or 0), int(record.get("height") or 0))


def row_evidence(record: Mapping[str, Any], entity: str) -> RowEvidence:
    """The candidates for ``entity`` in the image record's tokens, linked to its drawn lines."""
    tokens, size = image_tokens(record)
    segments = segments_from_flat(record.get("line_segments"))
    return RowEvidence(tokens, size, extract_candidates(tokens, entity, size, segments=segments), segments)


def evidence_fields(candidate: Candidate | None, *, reasons: Sequence[str] = ()) -> dict[str, Any]:
    """The predictions row's evidence columns for the chosen mention and the ``reasons`` that speak for it
    (all None without a mention). The caller names the reasons (the scoring layer's
    ``imagequant.scoring.rules.reasons``): this module reads evidence, it does not judge it."""
    if candidate is None:
        return dict.fromkeys(EVIDENCE_COLUMN_NAMES)
    return {
        "evidence_text": candidate.text,
        "evidence_left": int(candidate.left),
        "evidence_top": int(candidate.top),
        "evidence_width": int(candidate.width),
        "evidence_height": int(candidate.height),
        "evidence_angle": int(candidate.angle),
        "reasons": ",".join(reasons),
    }


def text_or_none(value: Any) -> str | None:
    """A cell as stripped text; None for null, NaN and blank cells."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None
