"""Token-list operations shared by every engine: framework-free, no image library.

Reading order, merging two readings of one image (two engines, or the rotated passes), finding the mentions
a second look may complete, and splitting words that an engine glued together.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence
from difflib import SequenceMatcher

from imagequant.core.tokens import OcrToken, box_overlap, token_box
from imagequant.core.units import UNIT_ALIASES


def clean_text(text: str) -> str:
    # NFKC folds full-width digits/letters that PP-OCR's Chinese-English dictionary emits ("５００ｇ").
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _norm_for_compare(text: str) -> str:
    return re.sub(r"[^0-9a-z.]", "", text.lower())


def similar_text(a: str, b: str) -> bool:
    """Whether two readings of one region say the same thing (case, punctuation and small slips aside)."""
    na, nb = _norm_for_compare(a), _norm_for_compare(b)
    if not na or not nb:
        return na == nb
    if na == nb or na in nb or nb in na:
        return True
    return SequenceMatcher(None, na, nb).ratio() >= 0.6


_DIGIT = re.compile(r"\d")


def has_digit(text: str) -> bool:
    return bool(_DIGIT.search(text))



def offset_ids(tokens: Sequence[OcrToken], line_offset: int, block_offset: int) -> list[OcrToken]:
    return [dataclasses.replace(t, line=t.line + line_offset, block=t.block + block_offset) for t in tokens]


def next_ids(tokens: Sequence[OcrToken]) -> tuple[int, int]:
    if not tokens:
        return 0, 0
    return max(t.line for t in tokens) + 1, max(t.block for t in tokens) + 1


def reading_order(tokens: Sequence[OcrToken]) -> list[OcrToken]:
    """Keeps each line's tokens together (by word index), lines sorted top to bottom then left to right,
    and renumbers lines 0..n-1 in that order (words 0..k-1 within each line)."""
    lines: dict[int, list[OcrToken]] = {}
    for t in tokens:
        lines.setdefault(t.line, []).append(t)

    def line_key(item: tuple[int, list[OcrToken]]) -> tuple[int, int, int]:
        toks = item[1]
        # Rotated lines sort by their top like the rest; the height bucket keeps one printed row together.
        return (min(t.top for t in toks), min(t.left for t in toks), item[0])

    out: list[OcrToken] = []
    for new_line, (_, toks) in enumerate(sorted(lines.items(), key=line_key)):
        for new_word, t in enumerate(sorted(toks, key=lambda t: t.word)):
            out.append(dataclasses.replace(t, line=new_line, word=new_word))
    return out


def merge_tokens(
    primary: Sequence[OcrToken], secondary: Sequence[OcrToken], min_overlap: float = 0.5
) -> list[OcrToken]:
    """Merges two engines' readings of one image.

    A secondary token that overlaps a primary one (IoU or intersection over the smaller box > min_overlap)
    with similar text is a duplicate: the one with the higher confidence is kept, in the primary token's
    place (its line and word position) so the primary lines stay whole. Other secondary tokens are added
    with their own (renumbered) lines.
    """
    result = list(primary)
    line_offset, block_offset = next_ids(primary)
    added: list[OcrToken] = []
    for s in secondary:
        best_i, best_ov = -1, 0.0
        for i, p in enumerate(result):
            ov = box_overlap(token_box(p), token_box(s))
            if ov > best_ov:
                best_i, best_ov = i, ov
        if best_i >= 0 and best_ov > min_overlap and similar_text(result[best_i].text, s.text):
            p = result[best_i]
            if s.conf > p.conf:
                result[best_i] = dataclasses.replace(s, block=p.block, line=p.line, word=p.word, angle=p.angle)
            continue
        added.append(dataclasses.replace(s, line=s.line + line_offset, block=s.block + block_offset))
    return reading_order(result + added)


def add_rotated_tokens(upright: Sequence[OcrToken], rotated: Sequence[OcrToken]) -> list[OcrToken]:
    """Adds the lines of rotated passes that hold a digit (with their other words: a unit is often a word of
    its own) unless an upright token already says the same there."""
    line_offset, block_offset = next_ids(upright)
    out = list(upright)
    digit_lines = {(t.angle, t.line) for t in rotated if has_digit(t.text)}
    for t in rotated:
        if (t.angle, t.line) not in digit_lines:
            continue
        # a rotated reading of text already read (a RapidOCR pass turns horizontal lines of a rotated image
        # back itself) is the same text, whichever reading is more confident
        dup = any(box_overlap(token_box(u), token_box(t)) > 0.5 and similar_text(u.text, t.text) for u in upright)
        if not dup:
            out.append(dataclasses.replace(t, line=t.line + line_offset, block=t.block + block_offset))
    return out


def _unit_word_pattern() -> str:
    """Every spelling of a unit made of letters (core.units' alias table, the one the candidate extractor
    reads too), longest first; a space in it may be a dot or nothing as print and OCR give it ("fl.oz",
    "floz"). Quote marks and other symbols are left out: alone they are punctuation far more often, and
    this pattern only decides where a second look may pay."""
    words = {alias for alias in UNIT_ALIASES if all(ch.isalpha() or ch == " " for ch in alias)}
    return "(?:" + "|".join(re.escape(w).replace(r"\ ", r"[.\s]?") for w in sorted(words, key=lambda w: (-len(w), w))) + ")"


# Short forms need the word boundary so "9" in "1999" is not a trigger.
_UNIT_WORD = _unit_word_pattern()
_NUMBER_UNIT = re.compile(r"\d+(?:[.,]\d+)?\s*" + _UNIT_WORD + r"(?![a-z])", re.IGNORECASE)
_UNIT_ONLY = re.compile(r"^[(\[]?" + _UNIT_WORD + r"[)\].,:;]?$", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"^[~≈(\[]?\d{1,5}(?:[.,]\d{1,3})?[)\].,:;]?$")


def incomplete_mentions(tokens: Sequence[OcrToken]) -> list[OcrToken]:
    """Tokens holding a number with no unit next to it, or a unit with no number before it."""
    lines: dict[int, list[OcrToken]] = {}
    for t in tokens:
        lines.setdefault(t.line, []).append(t)
    found: list[OcrToken] = []
    for toks in lines.values():
        toks = sorted(toks, key=lambda t: t.word)
        for i, t in enumerate(toks):
            prev_t = toks[i - 1].text if i > 0 else ""
            next_t = toks[i + 1].text if i + 1 < len(toks) else ""
            bare_number = _BARE_NUMBER.match(t.text) and not _NUMBER_UNIT.match(f"{t.text}{next_t}".replace(" ", ""))
            lone_unit = _UNIT_ONLY.match(t.text) and not re.search(r"\d[.,)]?$", prev_t)
            if bare_number or lone_unit:
                found.append(t)
    return found



def holds_number_with_unit(tokens: Sequence[OcrToken]) -> bool:
    """Whether a token, or a line of the tokens joined, holds a number with its unit."""
    if any(_NUMBER_UNIT.search(t.text) for t in tokens):
        return True
    lines: dict[int, list[str]] = {}
    for t in sorted(tokens, key=lambda t: (t.line, t.word)):
        lines.setdefault(t.line, []).append(t.text)
    return any(_NUMBER_UNIT.search(" ".join(words)) for words in lines.values())


# A number glued to the word before it: after two or more letters ("Weighs235g", "Wt500g") or after a letter
# and a separator ("NETWT.180G", "Weight:15g", "oz/80g", "(1GAL)3785ml"). Splitting there keeps a period
# that ends an abbreviation from being read as a decimal point (".180G" is not 0.18 g).
_SPLIT_GLUED = re.compile(r"(?<=[A-Za-z]{2})(?=\d)|(?<=[A-Za-z][.:/)])(?=\d)")


def split_line_words(text: str, split_letter_digit: bool = True) -> list[tuple[str, int, int]]:
    """Words of a recognised line with their [start, end) character spans.

    RapidOCR often drops spaces ("NETWT.180G"); with ``split_letter_digit`` a number glued to the word
    before it starts a new word (see _SPLIT_GLUED). A number followed by its unit ("180G") stays one word.
    """
    words: list[tuple[str, int, int]] = []
    for m in re.finditer(r"\S+", text):
        start = m.start()
        parts = _SPLIT_GLUED.split(m.group()) if split_letter_digit else [m.group()]
        for part in parts:
            if part:
                words.append((part, start, start + len(part)))
            start += len(part)
    return words


def split_glued_tokens(tokens: Sequence[OcrToken]) -> list[OcrToken]:
    """Splits tokens holding a number glued to a word; each part gets its share of the box by characters.

    The parts keep the token's word index (a stable sort keeps them in order) and the reading direction
    given by its angle decides which way the box is divided.
    """
    out: list[OcrToken] = []
    for t in tokens:
        parts = split_line_words(t.text)
        if len(parts) <= 1:
            out.append(t)
            continue
        n = len(t.text)
        for word, start, end in parts:
            f0, f1 = start / n, end / n
            if t.angle in (180, 270):  # read right to left / bottom to top in image coordinates
                f0, f1 = 1.0 - f1, 1.0 - f0
            if t.angle in (90, 270):
                top = t.top + int(round(f0 * t.height))
                box = (t.left, top, t.width, max(1, t.top + int(round(f1 * t.height)) - top))
            else:
                left = t.left + int(round(f0 * t.width))
                box = (left, t.top, max(1, t.left + int(round(f1 * t.width)) - left), t.height)
            out.append(dataclasses.replace(t, text=word, left=box[0], top=box[1], width=box[2], height=box[3]))
    return out

