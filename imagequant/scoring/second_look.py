"""The second look's question: does an image's reading still lack a plausible candidate for what it is read for?

The question belongs here, beside the rules' notion of a plausible candidate, and not in per-image reading
(:mod:`imagequant.pipeline.images`): reading knows images, not what makes a candidate usable. The jobs that know
the catalog rows (extract, measure_ocr, explain) pass :func:`lacks_plausible_candidate` to the reading functions,
which ask it of each image with the entities the catalog asks of that image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from imagequant.core.entities import ENTITIES
from imagequant.core.tokens import OcrToken
from imagequant.scoring.rules import plausible
from imagequant.text.candidates import extract_candidates


def _lacking(tokens: Sequence[OcrToken], entity: str, image_size: tuple[int, int]) -> bool:
    return not any(plausible(c, entity) for c in extract_candidates(list(tokens), entity, image_size))


def lacks_plausible_candidate(tokens: Sequence[OcrToken], entities: Sequence[str],
                              image_size: tuple[int, int]) -> bool:
    """Whether ``tokens`` (read from an image of ``image_size``) leave any of ``entities`` without a plausible
    candidate; with no known entity given, whether they leave every entity without one (an image read for
    nothing in particular looks again only when nothing at all was found)."""
    known = [e for e in entities if e in ENTITIES]
    if known:
        return any(_lacking(tokens, e, image_size) for e in known)
    return all(_lacking(tokens, e, image_size) for e in ENTITIES)


def lacks_candidates(entities: Sequence[str], image_size: tuple[int, int]) -> Callable[[Sequence[OcrToken]], bool]:
    """:func:`lacks_plausible_candidate` bound to one image: the second-look target an OCR engine takes
    (``imagequant.ocr.base.WantsMore``), for callers that drive an engine themselves."""
    asked = tuple(entities)

    def wants_more(tokens: Sequence[OcrToken]) -> bool:
        return lacks_plausible_candidate(tokens, asked, image_size)

    return wants_more
