"""Candidate extraction: every number-with-unit mention in an image's OCR tokens.

OCR engines split one printed mention over several tokens ("Net", "Wt.", "17.6", "oz") and misread
characters inside numbers ("1O0"). So tokens are first grouped into visual lines (the engine's line
numbers plus geometry), each line is joined into one string with a character -> token map, digit slips
are repaired inside digit runs, and a small grammar finds ``NUM UNIT``, ranges (``100-240V``), dual
values (``110/220V``), fractions (``1/2 in``) and dimension groups (``30 x 20 x 10 cm``) in it.
Each candidate then carries its evidence: text size, keywords on its line, the line above or the table
cell naming its row, recurrence and unit conversions of the same quantity, and its place among the
image's other candidates (a drawing's bottom row of labels, the labels beside it).
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from imagequant.core.entities import dimension_specs, entity_spec
from imagequant.core.geometry import Segment, labelled_line
from imagequant.core.tokens import OcrToken
from imagequant.core.units import (
    UNIT_ALIASES,
    UNIT_DIMENSION,
    UNIT_FACTOR,
    alias_key,
    format_value,
    normalize_unit,
    to_base,
)


@dataclass
class Candidate:
    """One value+unit mention found in the OCR tokens of one image, with the evidence about it."""

    value: float  # the number as read, in `unit`
    unit: str  # canonical unit name (e.g. "gram"), allowed for the row's entity
    text: str  # the raw text span it was read from
    token_start: int  # index of its first token in the image's token list
    token_end: int  # one past its last token
    left: int  # union box of its tokens, original image pixels
    top: int
    width: int
    height: int
    rel_height: float  # text height relative to the image's median token height
    rel_x: float  # box centre, 0..1 of image width
    rel_y: float  # box centre, 0..1 of image height
    conf: float  # mean OCR confidence of its tokens, 0..1
    recurrence: int = 1  # how many candidates of the image share this (value, unit)
    keyword: bool = False  # a keyword for the entity (Net Wt, Weight, Volt, ...) is near it
    unit_explicit: bool = True  # the unit was printed (not inferred from a symbol such as ")
    rank: int = 0  # order of appearance among the image's candidates for this entity
    # --- where its words are and what surrounds it ---
    keyword_same_line: bool = False  # the keyword is on the candidate's own line (not the line above)
    keyword_row: bool = False  # the keyword labels its row from the left, as in a specification table
    keyword_other: bool = False  # the words before it name a neighbouring entity ("Weight capacity" for a weight)
    range_low: bool = False  # lower end of "100-240V" or first of "110/220V"
    range_high: bool = False  # upper end of such a range / dual value
    xgroup_pos: int = -1  # position in a "30 x 20 x 10 cm" group, -1 when not in one
    xgroup_len: int = 0  # number of values in that group
    unit_shared: bool = False  # the unit was printed once for the whole x-group/range, not after this value
    dim_letter: str = ""  # "w", "h", "d" or "l" printed right before the value ("W30", "H: 20")
    glued: bool = False  # number and unit in one token ("500g")
    in_parens: bool = False  # inside parentheses, often the secondary unit: "17.6 oz (500 g)"
    ocr_fixed: bool = False  # a digit slip (O->0, l->1, S->5) was repaired in the number
    fraction: bool = False  # read from a fraction "1/2"
    angle: int = 0  # rotation of the OCR pass that read it
    line_index: int = -1  # index of its visual line in reading order
    n_candidates: int = 1  # candidates of this entity in the image
    base_value: float = 0.0  # value in the dimension's base unit (metre, gram, volt, watt, millilitre)
    dual_primary: bool = False  # the same quantity is printed again later in another unit
    dual_secondary: bool = False  # ... or was printed earlier in another unit (this is the conversion)
    unit_inferred: bool = False  # no unit was printed: a bare number read in the entity's usual unit
    leading_zero: bool = False  # printed as "06" / "0250": an integer with a leading zero (often an OCR slip)
    # --- where it stands among the image's candidates (a drawing prints width, depth and height apart) ---
    size_order: float = 0.5  # 0 = the largest distinct quantity of the image .. 1 = the smallest (0.5: one)
    lowest: bool = False  # no other candidate's centre lies lower in the image
    highest: bool = False
    leftmost: bool = False
    rightmost: bool = False
    # a drawing's bottom row of labels (width below the object, depth to its right) and the side labels
    row_left: bool = False  # leftmost of a bottom row that holds labels apart from each other
    row_right: bool = False  # rightmost of such a row
    beside_row: bool = False  # above the bottom row and outside its horizontal extent (a height on a side)
    # --- the drawn line it labels (imagequant.core.geometry), when the image has line segments ---
    line_orientation: str = ""  # "horizontal", "vertical", "diagonal", or "" when it labels no line
    line_length: float = 0.0  # that line's length as a share of the image's longer side


# --- token geometry ------------------------------------------------------------------------------------


@dataclass
class _Tok:
    """A token with its box in the frame of the OCR pass that read it (so reading order is left->right)."""

    index: int
    token: OcrToken
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def h(self) -> float:
        return max(1.0, self.y1 - self.y0)


def _frame_box(t: OcrToken) -> tuple[float, float, float, float]:
    """The token box rotated into its pass's frame (image rotated CCW by ``angle``; y axis down)."""
    if t.angle % 360 == 0:
        return float(t.left), float(t.top), float(t.left + t.width), float(t.top + t.height)
    theta = math.radians(t.angle)
    c, s = math.cos(theta), math.sin(theta)
    xs, ys = [], []
    for x, y in (
        (t.left, t.top),
        (t.left + t.width, t.top),
        (t.left, t.top + t.height),
        (t.left + t.width, t.top + t.height),
    ):
        # a CCW rotation of the picture maps (x, y) to (x cos + y sin, -x sin + y cos) up to a shift
        xs.append(x * c + y * s)
        ys.append(-x * s + y * c)
    return min(xs), min(ys), max(xs), max(ys)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _vertical_overlap(a: _Tok, b: _Tok) -> float:
    """Overlap of the two boxes' vertical spans as a share of the smaller height."""
    return max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0)) / min(a.h, b.h)


def group_lines(tokens: Sequence[OcrToken], max_gap: float = 1.2) -> list[list[int]]:
    """Token indices grouped into visual lines, each sorted left to right, lines in reading order.

    Tokens of one engine line are joined; tokens the engine put on different lines are joined too when
    they sit side by side (vertical overlap >= half the smaller height, similar heights, horizontal gap
    under ``max_gap`` x the taller height), because sparse-text OCR often splits "500" and "g".
    """
    toks = [_Tok(i, t, *_frame_box(t)) for i, t in enumerate(tokens) if t.text.strip()]
    uf = _UnionFind(len(toks))
    by_angle: dict[int, list[int]] = {}
    for k, tk in enumerate(toks):
        by_angle.setdefault(tk.token.angle % 360, []).append(k)
    for members in by_angle.values():
        engine_lines: dict[int, list[int]] = {}
        for k in members:
            engine_lines.setdefault(toks[k].token.line, []).append(k)
        for ks in engine_lines.values():
            ks.sort(key=lambda k: toks[k].x0)
            for a, b in zip(ks, ks[1:], strict=False):
                # the engine's line may span columns: only join words it put close together
                ta, tb = toks[a], toks[b]
                if tb.x0 - ta.x1 <= 4.0 * max(ta.h, tb.h) and _vertical_overlap(ta, tb) > 0.3:
                    uf.union(a, b)
        # right-hand neighbour of each token; only tokens whose centres lie within 2 heights
        # vertically can overlap enough (heights differ at most 3x), so scan that window only
        by_cy = sorted(members, key=lambda k: (toks[k].y0 + toks[k].y1) / 2)
        centres = [(toks[k].y0 + toks[k].y1) / 2 for k in by_cy]
        for a in members:
            ta = toks[a]
            cy = (ta.y0 + ta.y1) / 2
            lo = bisect.bisect_left(centres, cy - 2 * ta.h)
            hi = bisect.bisect_right(centres, cy + 2 * ta.h)
            best, best_gap = -1, math.inf
            for b in by_cy[lo:hi]:
                tb = toks[b]
                gap = tb.x0 - ta.x1
                if tb.x0 <= ta.x0 or gap > max_gap * max(ta.h, tb.h) or gap < -0.5 * min(ta.h, tb.h):
                    continue
                if _vertical_overlap(ta, tb) < 0.5 or max(ta.h, tb.h) > 3.0 * min(ta.h, tb.h):
                    continue
                if gap < best_gap:
                    best, best_gap = b, gap
            if best >= 0:
                uf.union(a, best)
    groups: dict[int, list[int]] = {}
    for k in range(len(toks)):
        groups.setdefault(uf.find(k), []).append(k)
    lines = []
    for ks in groups.values():
        ks.sort(key=lambda k: toks[k].x0)
        angle = toks[ks[0]].token.angle % 360
        top = statistics.median(toks[k].y0 for k in ks)
        lines.append((angle != 0, angle, top, toks[ks[0]].x0, [toks[k].index for k in ks]))
    lines.sort(key=lambda r: r[:4])
    return [r[4] for r in lines]


# --- text repair and numbers ---------------------------------------------------------------------------

_SLIP = {"O": "0", "o": "0", "D": "0", "Q": "0", "l": "1", "I": "1", "|": "1", "i": "1", "S": "5", "B": "8"}
# a slip character counts as a digit only between digits: "1O0" -> "100", but "5oz" keeps its "o"
_SLIP_RE = re.compile(r"(?<=[0-9])[OoDQlI|iSB]+(?=[0-9])")


# "3OZ" read as "30Z": a 0 glued between digits and a lone z is the O of "oz" (same length: "3oz")
_ZERO_OZ_RE = re.compile(r"(?<=[0-9])0(?=[zZ](?![A-Za-z]))")
# "1kg" read as "lkg" / "Ikg": a lone l or I glued to a unit is the digit 1
# ... and "l KG" / "I oz" the same slip where the reader kept the space (PP-OCRv6 keeps spaces v4 drops)
_ONE_BEFORE_UNIT_RE = re.compile(
    r"(?<![A-Za-z0-9.,])[lI](?=[ \t]?(?:kg|KG|Kg|mg|MG|ml|mL|ML|oz|OZ|lbs?|LBS?)(?![A-Za-z]))"
)


# "2.2lbs" read as "2.21bs": a 1 glued between a number and "b"/"bs" is the l of "lb" ("b" is no unit)
_ONE_FOR_L_RE = re.compile(r"(?:(?<=[0-9])|(?<=[0-9][ \t]))1(?=(?:bs?|BS?)(?![A-Za-z]))")  # also "2.2 1bs"


# "5Og", "1OOW": a capital O after a digit and before a unit is a 0; "l5kg", "I2V": a lone l or I starting a
# number is a 1
# Spaced ("5O g", "1O OZ"): the same, and there an O before oz or lb can only be a digit ("5Oz" glued is 5 oz).
_ZERO_BEFORE_UNIT_RE = re.compile(
    r"(?<=[0-9])O+(?=(?:g|kg|KG|Kg|mg|MG|ml|mL|ML|mm|cm|CM|MM|W|V)(?![A-Za-z])"
    r"|[ \t](?:g|kg|KG|Kg|mg|MG|ml|mL|ML|mm|cm|CM|MM|W|V|oz|OZ|Oz|lbs?|LBS?)(?![A-Za-z]))"
)
_ONE_BEFORE_DIGIT_RE = re.compile(
    r"(?<![A-Za-z0-9.,])[lI](?=[0-9]+(?:[.,][0-9]+)?\s?(?i:kg|mg|g|ml|oz|lbs?|v|w|cm|mm|in)(?![A-Za-z]))"
)


def repair_digits(text: str) -> str:
    """Repair OCR slips inside digit runs (same length, so character offsets survive)."""
    text = _SLIP_RE.sub(lambda m: "".join(_SLIP[ch] for ch in m.group(0)), text)
    text = _ZERO_BEFORE_UNIT_RE.sub(lambda m: "0" * len(m.group(0)), text)
    text = _ONE_BEFORE_DIGIT_RE.sub("1", text)
    text = _ONE_FOR_L_RE.sub("l", text)
    return _ONE_BEFORE_UNIT_RE.sub("1", _ZERO_OZ_RE.sub("o", text))


def parse_number(text: str) -> float | None:
    """A printed number with decimal comma or thousands separators: '1,5'->1.5, '1,000'->1000."""
    t = text.strip()
    if not t or not re.fullmatch(r"[0-9.,]*[0-9][0-9.,]*", t):
        return None
    seps = [ch for ch in t if ch in ".,"]
    if len(seps) > 1:
        last = max(t.rfind("."), t.rfind(","))
        int_part, frac = t[:last], t[last + 1 :]
        if len(set(seps)) == 1 and re.fullmatch(r"\d{1,3}(?:[.,]\d{3})+", t):
            t = t.replace(seps[0], "")  # 1,000,000 or 1.000.000
        elif re.fullmatch(r"\d{1,3}(?:[.,]\d{3})*", int_part):
            t = int_part.replace(",", "").replace(".", "") + "." + frac  # 1,234.5 or 1.234,5
        else:
            return None
    elif seps:
        sep = seps[0]
        int_part, frac = t.split(sep)
        if not frac:
            t = int_part
        elif not int_part:
            t = "0." + frac
        elif sep == "," and len(frac) == 3 and int_part != "0":
            t = int_part + frac  # 1,000 mg: a thousands separator
        else:
            t = int_part + "." + frac
    try:
        value = float(t)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --- the mention grammar -------------------------------------------------------------------------------


def _alias_pattern(alias: str) -> str:
    parts = [re.escape(p) for p in re.split(r"[\s.]+", alias) if p]
    return r"[\s.]*".join(parts)


# Units as the OCR misreads them: "oz" as "02"/"0z", "lb" as "|b" (Tesseract). Only ever taken right after a number.
_UNIT_SLIPS: dict[str, str] = {
    "02": "oz",
    "0z": "oz",
    "o2": "oz",
    "fl 02": "fl oz",
    "fl 0z": "fl oz",
    "fl o2": "fl oz",
    "|b": "lb",
    "|bs": "lbs",
    # an i read as l, an l as I, and "fl" losing its l: "0.42lnch", "200 mI", "128fOZ"
    "lnch": "inch",
    "lnches": "inches",
    "mi": "ml",
    "foz": "fl oz",
    "fi oz": "fl oz",  # "8 FI OZ": a capital I read for the l of a spaced "FL OZ"
    # fabric weight in grams per square metre, which catalogs record as the item weight in grams
    "gsm": "g",
    "¢": "g",  # Tesseract's usual reading of a printed "g"
}
_UNIT_ALIASES_SORTED = sorted([*UNIT_ALIASES, *_UNIT_SLIPS], key=len, reverse=True)
_UNIT_RE = re.compile(
    # "567.g": a stray full stop between an integer and its unit, as print dots and OCR specks make it
    # (not before "in", which after a full stop starts a sentence more often than it means inches)
    r"(?P<sep>\.(?=[^\W\d_])(?![iI][nN](?![^\W\d_]))|[ \t]*(?:-[ \t]*)?)(?P<unit>"
    + "|".join(_alias_pattern(a) for a in _UNIT_ALIASES_SORTED)
    # a unit ends where letters end; "cmx20" continues a dimension group; "60WMAX" is "60 W max"
    + r")\.?(?:(?![^\W\d_])|(?=[xX×]\s*[\d.])|(?=max(?![^\W\d_])))",
    re.IGNORECASE,
)
_NUM_RE = re.compile(r"(?<![0-9])(?:[0-9]+(?:[.,][0-9]+)*|\.[0-9]+)")
_RANGE_RE = re.compile(r"\s*(?:-|–|—|~|\s(?:to|TO|To)\s)\s*")
_FRACTION_DENOMS = {2, 3, 4, 8, 16, 32, 64}
_SLASH_RE = re.compile(r"\s*[/\u2044]\s*")  # also the fraction slash that Unicode folding makes of "½"
# Printed fraction glyphs; a glyph right after a digit is the fraction part of a mixed number ("12½").
_FRACTION_GLYPHS = {"½": "1/2", "⅓": "1/3", "⅔": "2/3", "¼": "1/4", "¾": "3/4", "⅛": "1/8", "⅜": "3/8",
                    "⅝": "5/8", "⅞": "7/8"}


def expand_fraction_glyphs(text: str) -> str:
    """``12½`` -> ``12 1/2``, ``¾`` -> ``3/4``: fraction glyphs as the digits the mention grammar reads."""
    if not any(ch in _FRACTION_GLYPHS for ch in text):
        return text
    out: list[str] = []
    for ch in text:
        glyph = _FRACTION_GLYPHS.get(ch)
        if glyph is None:
            out.append(ch)
        else:
            out.append((" " if out and out[-1][-1:].isdigit() else "") + glyph)
    return "".join(out)


def _glued_mixed_number(numerator: str, denominator: str) -> float | None:
    """``121/2`` -> 12.5: a mixed number whose space the OCR lost (or Unicode folding of ``12½``), told
    from a fraction by being improper (nobody prints 121/2 for 60.5). The fraction part is the longest
    proper tail of the numerator's digits: ``115/16`` -> 1 15/16, ``33/4`` -> 3 3/4."""
    if not (numerator.isdigit() and denominator.isdigit()) or len(numerator) < 2:
        return None
    den = int(denominator)
    if den not in _FRACTION_DENOMS or int(numerator) <= den:
        return None
    for k in range(len(numerator) - 1, 0, -1):
        tail = numerator[-k:]
        if tail[0] != "0" and 0 < int(tail) < den:
            return int(numerator[:-k]) + int(tail) / den
    return None
_SYMBOL_UNITS = {'"', "″", "''", "”", "“", "‟", "′′", "'", "′", "’"}


@dataclass(frozen=True)
class _LengthWords:
    """The patterns made of the lengths' letters and header words (the entity table)."""

    xsep: re.Pattern[str]  # "30 x 20", and "W30 x H20" where a length's letter precedes the next value
    letter: re.Pattern[str]  # a length's letter right before a value: "W30", "H: 20"
    header: re.Pattern[str]  # a group header naming each position: "L x W x H", "Width x Height"


def _length_words() -> _LengthWords:
    """The patterns for the table as it is now (an entity may be registered for a while)."""
    specs = dimension_specs()
    letters = "".join(dict.fromkeys(letter for spec in specs for letter in spec.letters))
    words = tuple(dict.fromkeys(word for spec in specs for word in spec.header_words))
    return _length_patterns(letters, words)


@functools.cache
def _length_patterns(letters: str, words: tuple[str, ...]) -> _LengthWords:
    cls = f"[{re.escape(letters.upper() + letters)}]" if letters else "(?!)"
    name = "|".join([*letters, *words]) or "(?!)"
    return _LengthWords(
        xsep=re.compile(rf"\s*[xX×*]\s*(?:{cls}\s*[:=]?\s*)?"),
        letter=re.compile(rf"(?:^|[^A-Za-z]|(?<=[0-9])[xX])({cls})\s*[:=.]?\s*$"),
        header=re.compile(rf"(?<![a-z])({name})\s*[x×*]\s*({name})(?:\s*[x×*]\s*({name}))?(?![a-z])"),
    )

@dataclass
class _Line:
    """A visual line joined into one string, with the token of every character."""

    tokens: list[int]
    raw: str
    fixed: str
    char_tok: list[int]  # token index per character, -1 for joining spaces
    token_spans: dict[int, tuple[int, int]]  # token index -> its character span in the line

    def tokens_in(self, start: int, end: int) -> list[int]:
        """The token indices, in order, that characters ``start:end`` of the line come from."""
        return sorted({self.char_tok[i] for i in range(start, end) if self.char_tok[i] >= 0})


def _build_line(tokens: Sequence[OcrToken], idxs: list[int]) -> _Line:
    raw_parts, char_tok = [], []
    spans: dict[int, tuple[int, int]] = {}
    for n, i in enumerate(idxs):
        if n:
            raw_parts.append(" ")
            char_tok.append(-1)
        text = expand_fraction_glyphs(tokens[i].text.strip())
        raw_parts.append(text)
        if text:
            spans[i] = (len(char_tok), len(char_tok) + len(text))
        char_tok.extend([i] * len(text))
    raw = "".join(raw_parts)
    return _Line(idxs, raw, repair_digits(raw), char_tok, spans)


@dataclass
class _Mention:
    """One value+unit found in a line string, before it gets its box and evidence."""

    value: float
    unit_text: str
    start: int  # character span of the whole mention (number .. unit) in the line
    end: int
    num_start: int
    num_end: int
    unit_shared: bool = False
    range_low: bool = False
    range_high: bool = False
    xgroup_pos: int = -1
    xgroup_len: int = 0
    fraction: bool = False


# Units printed glued to the number and to the next word ("250WMOTOR", "15MGserving", "200gpack"): taken
# only for these common spellings and only with nothing between number and unit.
_GLUED_WORD_UNITS = ("mg", "kg", "g", "gsm", "ml", "oz", "lbs", "lb", "w", "v", "inch", "cm", "mm")
_GLUED_WORD_RE = re.compile(r"(?P<sep>)(?P<unit>" + "|".join(sorted(_GLUED_WORD_UNITS, key=len, reverse=True))
                            + r")(?=[^\W\d_])", re.IGNORECASE)


def _unit_at(s: str, pos: int) -> re.Match[str] | None:
    m = _UNIT_RE.match(s, pos)
    if m is None:
        return _GLUED_WORD_RE.match(s, pos) if pos > 0 and s[pos - 1].isdigit() else None
    alias = m.group("unit")
    if alias.lower() == "in" and re.match(r"\s*\d", s[m.end() :]):
        return None  # "5 in 1", "2 in 1" are not inches
    if m.group("sep").strip() == "-" and alias in _SYMBOL_UNITS:
        return None
    if alias in _SYMBOL_UNITS and m.group("sep"):
        return None  # a quote mark after a space is punctuation, not an inch sign
    if (
        alias_key(alias) in ("02", "0z", "o2")  # the bare slips, not "fOZ" or "FL. 0Z"
        and (re.match(r"[0-9]", s[m.end() :]) or not m.group("sep"))
    ):
        return None  # "3.5 02" is a misread "3.5 oz"; "3.502" or "02 5" are numbers
    return m


def _find_mentions(s: str) -> list[_Mention]:
    """Parse the repaired line string into mentions (not yet filtered by entity)."""
    xsep_re = _length_words().xsep
    nums = list(_NUM_RE.finditer(s))
    out: list[_Mention] = []
    k = 0
    while k < len(nums):
        # a chain: NUM [UNIT] (SEP NUM [UNIT])*, with one kind of separator
        chain = [nums[k]]
        units: list[re.Match[str] | None] = [_unit_at(s, nums[k].end())]
        kind = ""
        j = k
        while j + 1 < len(nums):
            pos = units[-1].end() if units[-1] else chain[-1].end()
            gap = s[pos : nums[j + 1].start()]
            if xsep_re.fullmatch(gap):
                sep = "x"
            elif _RANGE_RE.fullmatch(gap) and not (units[-1] and units[-1].group("sep").strip() == "-"):
                sep = "range"
            elif _SLASH_RE.fullmatch(gap):
                sep = "slash"
            else:
                break
            if kind and sep != kind:
                break
            kind = sep
            j += 1
            chain.append(nums[j])
            units.append(_unit_at(s, nums[j].end()))
        k = j + 1
        values = [parse_number(m.group(0)) for m in chain]

        if kind == "slash" and len(chain) == 2 and units[0] is None and units[1] is not None:
            a, b = chain[0].group(0), chain[1].group(0)
            mixed = _glued_mixed_number(a, b)
            if mixed is not None:
                out.append(_Mention(mixed, units[1].group("unit"), chain[0].start(), units[1].end(),
                                    chain[0].start(), chain[1].end(), fraction=True))
                continue
            if a.isdigit() and b.isdigit() and int(b) in _FRACTION_DENOMS and 0 < int(a) < int(b):
                value = int(a) / int(b)
                start = chain[0].start()
                # a mixed number "1 1/2 in": an integer right before, separated by one space
                prev = [m for m in nums if m.end() == chain[0].start() - 1 and s[m.end()] == " "]
                if prev and prev[0].group(0).isdigit():
                    value += int(prev[0].group(0))
                    start = prev[0].start()
                    out[:] = [mm for mm in out if mm.num_start != prev[0].start()]
                out.append(
                    _Mention(
                        value,
                        units[1].group("unit"),
                        start,
                        units[1].end(),
                        start,
                        chain[1].end(),
                        fraction=True,
                    )
                )
                continue

        # "6.7in/17cm" or "500g - 17.6oz" is one quantity in two units, not a range
        own_units = {_canonical(u.group("unit")) for u in units if u is not None}
        conversion = len(own_units) > 1 and all(u is not None for u in units)
        for n, (m, u, v) in enumerate(zip(chain, units, values, strict=True)):
            if v is None:
                continue
            shared = False
            if u is None:
                later = [x for x in units[n + 1 :] if x is not None]
                earlier = [x for x in units[:n] if x is not None]
                # a range shares any unit; an x-group only a length ("2 x 500g" is a count, not 2 g)
                if later and (
                    kind in ("range", "slash") or (kind == "x" and _is_length(later[0].group("unit")))
                ):
                    u, shared = later[0], True
                elif kind == "x" and earlier and _is_length(earlier[-1].group("unit")):
                    u, shared = earlier[-1], True
            if u is None:
                continue
            mention = _Mention(
                v,
                u.group("unit"),
                m.start(),
                u.end() if not shared else m.end(),
                m.start(),
                m.end(),
                unit_shared=shared,
            )
            if kind in ("range", "slash") and len(chain) >= 2 and not conversion:
                mention.range_low = n == 0
                mention.range_high = n == len(chain) - 1
            if kind == "x" and len(chain) >= 2:
                mention.xgroup_pos, mention.xgroup_len = n, len(chain)
            out.append(mention)
    return out


def _mention_unit(m: _Mention, entity: str) -> tuple[str | None, bool]:
    """The unit of ``entity`` that mention ``m`` names (None: none of its units), and whether it was read
    from a known OCR slip of a unit word."""
    slip = _UNIT_SLIPS.get(alias_key(m.unit_text))
    return normalize_unit(slip or m.unit_text, entity), slip is not None


def _drop_glued_bars(s: str, mentions: list[_Mention], entity: str) -> None:
    """"100g|3.52oz" read as "100g13.52oz": a 1 glued right after the previous mention's unit is the bar
    between two units of one quantity when dropping it makes the number that quantity's conversion (and
    keeping it does not). Mends ``mentions`` in place."""
    for prev, m in zip(mentions, mentions[1:], strict=False):
        if m.num_start != prev.end or not re.match(r"1[0-9]", s[m.num_start : m.num_end]):
            continue
        unit, prev_unit = _mention_unit(m, entity)[0], _mention_unit(prev, entity)[0]
        rest = parse_number(s[m.num_start + 1 : m.num_end])
        if unit is None or prev_unit is None or unit == prev_unit or rest is None or prev.value <= 0:
            continue
        quantity = to_base(prev.value, prev_unit)[0]
        kept, dropped = (abs(to_base(v, unit)[0] / quantity - 1.0) for v in (m.value, rest))
        if dropped <= 0.03 < kept:
            m.value, m.num_start = rest, m.num_start + 1
            m.start = max(m.start, m.num_start)


def _is_length(alias: str) -> bool:
    unit = normalize_unit(alias)
    return unit is not None and UNIT_DIMENSION[unit] == "length"


def _canonical(alias: str) -> str | None:
    return normalize_unit(_UNIT_SLIPS.get(alias_key(alias), alias))


# --- evidence --------------------------------------------------------------------------------------------


def _keyword_context(line: _Line, char_start: int, n_before: int = 4) -> str:
    """Lower-cased text of up to ``n_before`` tokens before the mention, plus the start of its own token."""
    pos = line.tokens.index(line.char_tok[char_start])
    first = line.tokens[max(0, pos - n_before)]
    return line.raw[line.char_tok.index(first) : char_start].lower()


def _header_letters(context: str) -> list[str]:
    """Letters of a dimension header such as "L x W x H" or "Width x Height", in order ([] if none); a
    header word names its position by its first letter (the entity table's header_words)."""
    found = _length_words().header.findall(context)
    if not found:
        return []
    return [g[0] for g in found[-1] if g]


# bare numbers that are clearly something else: percentages, degrees, times, dates, prices, counts
_NOT_A_QUANTITY_AFTER = re.compile(r"\s*(?:%|°|:\d|/\d|-\d|x\s*\d|st\b|nd\b|rd\b|th\b|[a-zA-Z]{2})")
_NOT_A_QUANTITY_BEFORE = re.compile(r"(?:[$€£¥#:/]|\d[-/.])\s*$")


def extract_candidates(
    tokens: Sequence[OcrToken],
    entity: str,
    image_size: tuple[int, int],
    unitless_fallback: bool = False,
    segments: Sequence[Segment] = (),
) -> list[Candidate]:
    """All candidates for ``entity`` in reading order; ``image_size`` is (width, height); ``segments`` are
    the image's drawn line segments, which dimension candidates are linked to (the line each labels).

    With ``unitless_fallback`` an image without any unit mention yields its bare numbers instead, read
    in the entity's most common unit (``unit_inferred``): when every row has a truth, a wrong answer
    costs F1 exactly what an empty one does, so a guess can only help.
    """
    spec = entity_spec(entity)
    img_w, img_h = max(1, image_size[0]), max(1, image_size[1])
    heights = [_frame_h(t) for t in tokens if t.text.strip()]
    median_h = statistics.median(heights) if heights else 1.0
    lines = [_build_line(tokens, idxs) for idxs in group_lines(tokens)]
    ctx = _Context(tokens, lines, entity, img_w, img_h, median_h)
    out: list[Candidate] = []
    # the engine's lines, then the number+unit pairs stacked over two of them
    for li in [*range(len(lines)), *_stacked_lines(ctx)]:
        mentions = _find_mentions(ctx.lines[li].fixed)
        _drop_glued_bars(ctx.lines[li].fixed, mentions, entity)
        for m in mentions:
            unit, slip = _mention_unit(m, entity)
            if unit is None or m.value <= 0:
                continue  # not a unit of this entity, or 0 (nutrition tables: "Fat 0g") which is never an answer
            c = _make_candidate(ctx, li, m, unit, unit_slip=slip)
            if c is not None:
                out.append(c)
    if not out and unitless_fallback:
        for li, line in enumerate(lines):
            for num in _NUM_RE.finditer(line.fixed):
                value = parse_number(num.group(0))
                if (
                    value is None
                    or value <= 0
                    or _NOT_A_QUANTITY_AFTER.match(line.fixed, num.end())
                    or _NOT_A_QUANTITY_BEFORE.search(line.fixed[: num.start()])
                    or (value.is_integer() and 1900 <= value <= 2100)  # years
                ):
                    continue
                m = _Mention(value, spec.default_unit, num.start(), num.end(), num.start(), num.end())
                c = _make_candidate(ctx, li, m, spec.default_unit, unit_slip=False, inferred=True)
                if c is not None:
                    out.append(c)
    for rank, c in enumerate(out):
        c.rank = rank
        c.n_candidates = len(out)
    _place_among_others(out)
    if segments and spec.dimension:
        for c in out:
            link = labelled_line((c.left, c.top, c.width, c.height), c.rel_height * median_h, segments,
                                 (img_w, img_h))
            if link is not None:
                c.line_orientation, c.line_length = link.orientation, link.length
    # compare each candidate only with those that same_quantity's widest tolerance can reach
    by_base = sorted(out, key=lambda o: o.base_value)
    bases = [o.base_value for o in by_base]
    steps = {id(o): _half_step(o.value) for o in out}
    reach = 1.0 / (1.0 - _MAX_ROUNDING_GAP)
    for c in out:
        lo = bisect.bisect_left(bases, c.base_value / reach)
        hi = bisect.bisect_right(bases, c.base_value * reach)
        same = [o for o in by_base[lo:hi] if same_quantity(c, o, steps[id(c)], steps[id(o)])]
        same.sort(key=lambda o: o.rank)
        c.recurrence = len(same)
        # one quantity printed in two units ("6.7in / 17cm", "17.6 oz (500 g)"): the first is the primary
        converted = [o for o in same if o.unit != c.unit]
        c.dual_primary = any(o.rank > c.rank for o in converted)
        c.dual_secondary = any(o.rank < c.rank for o in converted)
    _order_by_size(by_base[::-1], steps)
    return out


def _order_by_size(ordered: list[Candidate], steps: dict[int, float]) -> None:
    """Sets ``size_order`` of candidates ``ordered`` from the largest base value down: 0 for the largest
    quantity of the image .. 1 for the smallest, 0.5 when the image states one quantity only. One quantity
    printed in two units ("15.8 in / 40.1 cm") is one size, so neither half outranks the other."""
    levels, level = [], 0
    for i, c in enumerate(ordered):
        if i and not same_quantity(c, ordered[i - 1], steps[id(c)], steps[id(ordered[i - 1])]):
            level += 1
        levels.append(level)
    for c, own in zip(ordered, levels, strict=True):
        c.size_order = own / level if level else 0.5


# Centres within this share of the image height of the lowest one form the bottom row of a drawing; two
# labels of that row are apart when their centres differ by this share of the image width.
_ROW_BAND = 0.1
_ROW_APART = 0.15


def _place_among_others(cands: list[Candidate]) -> None:
    """Sets whether each candidate is the lowest / highest / leftmost / rightmost one, and its place in a
    drawing's layout: dimension drawings print the width under the object, the depth to the right of it
    along the receding edge, and the height beside the object, above that row."""
    if not cands:
        return
    top, bottom = min(c.rel_y for c in cands), max(c.rel_y for c in cands)
    left, right = min(c.rel_x for c in cands), max(c.rel_x for c in cands)
    row = [c for c in cands if c.rel_y >= bottom - _ROW_BAND]
    in_bottom_row = {id(c) for c in row}
    row_lo, row_hi = min(c.rel_x for c in row), max(c.rel_x for c in row)
    row_x0, row_x1 = min(c.left for c in row), max(c.left + c.width for c in row)
    apart = row_hi - row_lo >= _ROW_APART
    for c in cands:
        c.lowest, c.highest = c.rel_y >= bottom, c.rel_y <= top
        c.leftmost, c.rightmost = c.rel_x <= left, c.rel_x >= right
        in_row = id(c) in in_bottom_row
        c.row_left = in_row and apart and c.rel_x < row_lo + _ROW_APART / 2
        c.row_right = in_row and apart and c.rel_x > row_hi - _ROW_APART / 2
        centre = c.left + c.width / 2
        c.beside_row = not in_row and not row_x0 <= centre <= row_x1


@dataclass
class _Context:
    """What every candidate of one image is measured against."""

    tokens: Sequence[OcrToken]
    lines: list[_Line]
    entity: str
    img_w: int
    img_h: int
    median_h: float
    line_boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # (angle, x0, y0, x1, y1) of every line in its pass's frame, for finding the line above
        self.line_boxes = [self.frame_box(line.tokens) for line in self.lines]

    def frame_box(self, idxs: Sequence[int]) -> tuple[int, float, float, float, float]:
        """(angle, x0, y0, x1, y1) of tokens ``idxs`` in their pass's frame."""
        boxes = [_frame_box(self.tokens[i]) for i in idxs]
        return (
            self.tokens[idxs[0]].angle % 360,
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )

    def add_line(self, idxs: list[int]) -> int:
        """Adds a line made of tokens ``idxs`` (in that order); returns its index."""
        self.lines.append(_build_line(self.tokens, idxs))
        self.line_boxes.append(self.frame_box(idxs))
        return len(self.lines) - 1


# a number ending its line with no unit after it ("350" of a big "350" printed over a small "LBS")
_TRAILING_NUMBER_RE = re.compile(r"(?<![0-9.,])[0-9]+(?:[.,][0-9]+)?\s*$")
_NUMBER_TOKEN_RE = re.compile(r"[0-9]+(?:[.,][0-9]+)?")


def _unitless_numbers(line: _Line) -> list[list[int]]:
    """Token indices of each number in ``line`` with no unit after it: the number ending the line, and every
    token that is a number by itself (side-by-side grouping may have put other words after it)."""
    spans = []
    m = _TRAILING_NUMBER_RE.search(line.fixed)
    if m is not None:
        spans.append((m.start(), m.end()))
    for start, end in line.token_spans.values():
        if _NUMBER_TOKEN_RE.fullmatch(line.fixed, start, end):
            spans.append((start, end))
    found: list[list[int]] = []
    for start, end in spans:
        toks = line.tokens_in(start, end)
        if toks and toks not in found and _unit_at(line.fixed, end) is None:
            found.append(toks)
    return found


def _stacked_lines(ctx: _Context) -> list[int]:
    """Joins a number with no unit after it to a unit that starts the line right below it or right beside it
    (headline values are often printed as a big number with a small unit under or next to it, which the
    OCR reads as two lines). Returns the indices of the joined lines it adds to ``ctx``."""
    added: list[int] = []
    starts = []  # lines starting with a unit word: (index, unit tokens)
    for lj, line in enumerate(ctx.lines):
        u = _unit_at(line.fixed, 0)
        if u is not None and not u.group("sep") and u.group("unit") not in _SYMBOL_UNITS:
            starts.append((lj, line.tokens_in(u.start(), u.end())))
    if not starts:
        return added
    for li in range(len(ctx.lines)):
        for num_toks in _unitless_numbers(ctx.lines[li]):
            unit_toks = _unit_under_or_beside(ctx, num_toks, [u for lj, u in starts if lj != li and u])
            if unit_toks is not None:
                added.append(ctx.add_line(num_toks + unit_toks))
    return added


def _unit_under_or_beside(ctx: _Context, num_toks: list[int], units: list[list[int]]) -> list[int] | None:
    """Of ``units`` (each the tokens of a unit starting a line), the one printed closest under or right beside
    the number ``num_toks``; None when none is placed so."""
    angle, nx0, ny0, nx1, ny1 = ctx.frame_box(num_toks)
    nh = ny1 - ny0
    best, best_gap = None, math.inf
    for unit_toks in units:
        u_angle, ux0, uy0, ux1, uy1 = ctx.frame_box(unit_toks)
        if u_angle != angle or uy1 - uy0 > 1.5 * nh:
            # the unit is never printed larger than its number (a capitals word's box is up to half
            # taller than the digits' box at the same print size)
            continue
        below = uy0 - ny1
        beside = ux0 - nx1
        # Detector boxes are loose around big print, so the unit may start inside the number's box: below
        # it up to a third of its height, or beside it when it starts right of the number's middle.
        if -0.3 * nh <= below <= 0.8 * nh and min(nx1, ux1) - max(nx0, ux0) > 0:
            gap = below
        elif (
            ux0 > (nx0 + nx1) / 2
            and beside <= 1.0 * nh
            and ny0 - 0.2 * nh <= (uy0 + uy1) / 2 <= ny1 + 0.2 * nh
        ):
            gap = max(0.0, beside)
        else:
            continue
        if gap < best_gap:
            best, best_gap = unit_toks, gap
    return best


def _make_candidate(
    ctx: _Context, li: int, m: _Mention, unit: str, unit_slip: bool, inferred: bool = False
) -> Candidate | None:
    """A Candidate with its box and evidence for mention ``m`` on line ``li``."""
    tokens, line = ctx.tokens, ctx.lines[li]
    span_toks = line.tokens_in(m.num_start, m.end)
    if not span_toks:
        return None
    box = [tokens[i] for i in span_toks]
    left = min(t.left for t in box)
    top = min(t.top for t in box)
    right = max(t.left + t.width for t in box)
    bottom = max(t.top + t.height for t in box)
    cand_h = max(_frame_h(t) for t in box)
    spec = entity_spec(ctx.entity)
    kw_re = spec.keyword_re()
    context = _keyword_context(line, m.num_start)
    same_line_kw = bool(kw_re.search(context))
    above_kw = False
    above = _line_above(ctx, li, span_toks) if not same_line_kw or m.xgroup_pos >= 0 else None
    if not same_line_kw:
        above_kw = above is not None and bool(kw_re.search(above.raw.lower()))
    row_label = _row_label(ctx, li, span_toks)
    label_text = row_label.raw.lower() if row_label is not None else ""
    row_kw = bool(label_text) and bool(kw_re.search(label_text))
    competing = spec.competing_re()
    other_kw = competing is not None and bool(competing.search(f"{label_text} {context}"))
    letter_match = _length_words().letter.search(line.raw[max(0, m.num_start - 4) : m.num_start])
    letter = letter_match.group(1).lower() if letter_match else ""
    if m.xgroup_pos >= 0:
        # "L x W x H: 30 x 20 x 10 cm": the header names each position of the group
        header = _header_letters(line.raw[: m.start].lower()) or (
            _header_letters(above.raw.lower()) if above is not None else []
        )
        if len(header) == m.xgroup_len:
            letter = header[m.xgroup_pos]
    num_toks = {line.char_tok[i] for i in range(m.num_start, m.num_end)}
    unit_toks = {line.char_tok[i] for i in range(m.num_end, m.end) if line.char_tok[i] >= 0}
    raw_num = line.raw[m.num_start : m.num_end]
    if inferred:
        text = raw_num
    elif m.unit_shared:
        text = f"{raw_num} {m.unit_text}"
    else:
        text = line.raw[m.start : m.end]
    return Candidate(
        value=m.value,
        unit=unit,
        text=text,
        token_start=min(span_toks),
        token_end=max(span_toks) + 1,
        left=left,
        top=top,
        width=right - left,
        height=bottom - top,
        rel_height=cand_h / ctx.median_h if ctx.median_h > 0 else 1.0,
        rel_x=min(1.0, max(0.0, (left + right) / 2 / ctx.img_w)),
        rel_y=min(1.0, max(0.0, (top + bottom) / 2 / ctx.img_h)),
        conf=min(1.0, max(0.0, statistics.fmean(max(0.0, t.conf) for t in box) / 100.0)),
        keyword=same_line_kw or above_kw or row_kw,
        keyword_row=row_kw,
        keyword_other=other_kw,
        unit_explicit=not inferred and m.unit_text.strip() not in _SYMBOL_UNITS,
        keyword_same_line=same_line_kw,
        range_low=m.range_low,
        range_high=m.range_high,
        xgroup_pos=m.xgroup_pos,
        xgroup_len=m.xgroup_len,
        unit_shared=m.unit_shared,
        dim_letter=letter,
        glued=bool(unit_toks) and not m.unit_shared and not inferred and bool(num_toks & unit_toks),
        in_parens="(" in line.raw[max(0, m.start - 2) : m.start],
        ocr_fixed=unit_slip or raw_num != line.fixed[m.num_start : m.num_end],
        fraction=m.fraction,
        angle=box[0].angle,
        line_index=li,
        base_value=to_base(m.value, unit)[0],
        unit_inferred=inferred,
        leading_zero=bool(re.match(r"0[0-9]", line.fixed[m.num_start : m.num_end])),
    )


def _half_step(value: float) -> float:
    """Half a unit of the last printed decimal: 13 -> 0.5, 6.7 -> 0.05 (how far rounding may move it)."""
    text = format_value(value)
    decimals = 0 if text.endswith(".0") else len(text.split(".")[1])
    return 0.5 * 10.0**-decimals


# The widest gap (share of the larger) that rounding may open between one quantity printed in two units:
# a short conversion is coarse ("11 mm / 0.4 in" is 8% apart), and a wider gap is two quantities.
_MAX_ROUNDING_GAP = 0.10


def same_quantity(
    a: Candidate, b: Candidate, step_a: float | None = None, step_b: float | None = None
) -> bool:
    """Do two candidates state the same quantity? Same unit: equal numbers. Different units: equal in
    base units up to the rounding of the printed numbers (13 cm ~ 5.3 in, 11 mm ~ 0.4 in), at most 10%
    apart. ``step_a``/``step_b`` are the precomputed :func:`_half_step` of their values."""
    if a.unit == b.unit:
        return math.isclose(a.value, b.value, rel_tol=1e-9)
    step_a = _half_step(a.value) if step_a is None else step_a
    step_b = _half_step(b.value) if step_b is None else step_b
    big = max(abs(a.base_value), abs(b.base_value))
    rounding = step_a * UNIT_FACTOR[a.unit] + step_b * UNIT_FACTOR[b.unit]
    tol = max(0.015 * big, min(rounding, _MAX_ROUNDING_GAP * big))
    return abs(a.base_value - b.base_value) <= tol


def _frame_h(t: OcrToken) -> float:
    x0, y0, x1, y1 = _frame_box(t)
    return max(1.0, y1 - y0)


def _line_above(ctx: _Context, li: int, span: list[int]) -> _Line | None:
    """The nearest line right above the mention (same pass), overlapping it horizontally."""
    angle, x0, y0, x1, y1 = ctx.frame_box(span)
    h = y1 - y0
    best, best_gap = None, math.inf
    for lj, (o_angle, ox0, oy0, ox1, oy1) in enumerate(ctx.line_boxes):
        if lj == li or o_angle != angle:
            continue
        gap = y0 - oy1
        if -0.3 * h <= gap <= 1.5 * h and oy0 < y0 and min(x1, ox1) - max(x0, ox0) > 0 and gap < best_gap:
            best, best_gap = ctx.lines[lj], gap
    return best


def _row_label(ctx: _Context, li: int, span: list[int]) -> _Line | None:
    """The line labelling the mention's row from the left (a table's name cell): the nearest line of the
    same pass that ends left of it, its centre at most 1.5 line heights above or below (cells are often
    aligned to their tops, not their centres)."""
    angle, x0, y0, _x1, y1 = ctx.frame_box(span)
    h, cy = y1 - y0, (y0 + y1) / 2
    best, best_dist = None, math.inf
    for lj, (o_angle, _ox0, oy0, ox1, oy1) in enumerate(ctx.line_boxes):
        if lj == li or o_angle != angle or ox1 > x0 + 0.2 * h:
            continue
        dist = abs((oy0 + oy1) / 2 - cy)
        if dist <= 1.5 * max(h, oy1 - oy0) and dist < best_dist:
            best, best_dist = ctx.lines[lj], dist
    return best
