"""Every entity ImageQuant can read, one :class:`EntitySpec` each, in one table.

An entry says everything the pure steps need about an entity: its allowed units (the challenge's list),
how often each unit is the label's unit, the unit a bare number is read in, the plausible magnitude, the
words that name it on packaging, the words that name a neighbouring entity instead, and whether it is a
length of a drawing; for such a length also where drawings and ``a x b x c`` groups print it. Units,
candidates, rules, the network and the synthetic generator all read this table; adding an entity is one
entry here plus its text templates in :mod:`imagequant.synthetic` (:func:`registered` adds one for a while).

The table is checked when imported (every field consistent, every regular expression valid), and
:mod:`imagequant.core.units` checks that every unit named here is a unit it can convert.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

from imagequant.core.geometry import ORIENTATIONS

_LENGTH = frozenset({"centimetre", "foot", "inch", "metre", "millimetre", "yard"})
_MASS = frozenset({"gram", "kilogram", "microgram", "milligram", "ounce", "pound", "ton"})
# Share of each unit among dimension labels (CHALLENGE.md statistics and the public train labels).
_LENGTH_PRIOR = {"centimetre": 0.50, "inch": 0.34, "millimetre": 0.14, "metre": 0.012, "foot": 0.01,
                 "yard": 0.001}
_DIMENSION_WORDS = r"size|dimensions?|dims?|measures?"

# Where a drawing prints a length's label: under the object (left of the bottom row of labels), along the
# receding edge (right of that row), or beside the object above that row.
DRAWING_ROLES = ("below", "receding", "beside")
# Which way the line a length's label sits on runs in a drawing: the geometry's classes.
LINE_ORIENTATIONS = ORIENTATIONS
# A length's place in an "a x b x c" group: first (W x D x H), last (W x D x H, W x H), or the middle of
# a triple (W x D x H; failing that the first, as in L x W x H).
GROUP_POSITIONS = ("first", "middle", "last")
# Which end of an image's sizes a length takes in catalog labels ("": neither more often).
SIZE_ENDS = ("largest", "smallest", "")


@dataclass(frozen=True)
class ValueRange:
    """How the synthetic generator draws an entity's value in one unit."""

    lo: float  # log-uniform bounds of the value
    hi: float
    p_int: float  # share written as a whole number
    nice: tuple[float, ...] = ()  # values packaging favours (500 g, 12 V, 60 W)
    p_nice: float = 0.4

    def __post_init__(self) -> None:
        if not 0 < self.lo < self.hi or not 0 <= self.p_int <= 1 or not 0 <= self.p_nice <= 1:
            raise ValueError(f"value range {self} needs 0 < lo < hi and shares in [0, 1]")


@dataclass(frozen=True)
class EntitySpec:
    name: str
    units: frozenset[str]  # the allowed units, canonical names
    unit_prior: Mapping[str, float]  # share of each unit among the entity's labels; absent units get a floor
    default_unit: str  # a bare number's unit when a row must be answered without a printed unit
    plausible_base: tuple[float, float]  # plausible magnitude in the dimension's base unit (low, high)
    keywords: str  # regular expression (alternation, lower case) of words naming the entity on packaging
    competing_keywords: str = ""  # words naming a neighbouring entity: "Weight capacity" is no item weight
    dimension: bool = False  # a length of the product, as dimension drawings and "a x b x c" groups print it
    letters: tuple[str, ...] = field(default=())  # letters printed before its value ("W30", "H: 20")
    # --- lengths only (dimension=True must set the first three; other entities leave them all empty) ---
    drawing_role: str = ""  # where a drawing prints its label: one of DRAWING_ROLES
    line_orientation: str = ""  # which way the line its label sits on runs: one of LINE_ORIENTATIONS
    group_position: str = ""  # its place in an "a x b x c" group: one of GROUP_POSITIONS
    size_end: str = ""  # which end of an image's sizes it takes more often: one of SIZE_ENDS
    rotated_text: bool = False  # text turned 90 degrees along a vertical edge measures it
    header_words: tuple[str, ...] = ()  # words naming it in a group header ("Width x Height"); each starts
    # with one of its letters, which then names its place in the group
    # The synthetic generator's value per unit where it differs from the unit's usual one (synthetic._RANGES):
    # a maximum load is heavier than an item weight.
    value_ranges: Mapping[str, ValueRange] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            problems.append("name must be lower-case letters, digits and _")
        if not self.units:
            problems.append("no units")
        if self.default_unit not in self.units:
            problems.append(f"default_unit {self.default_unit!r} is not one of its units")
        if set(self.unit_prior) - set(self.units):
            problems.append(f"unit_prior names units it does not allow: {sorted(set(self.unit_prior) - set(self.units))}")
        if any(not 0 < p <= 1 for p in self.unit_prior.values()):
            problems.append("unit_prior shares must lie in (0, 1]")
        low, high = self.plausible_base
        if not 0 <= low < high:
            problems.append("plausible_base must be (low, high) with 0 <= low < high")
        for label, pattern in (("keywords", self.keywords), ("competing_keywords", self.competing_keywords)):
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"{label} is not a regular expression: {exc}")
        if not self.keywords:
            problems.append("no keywords")
        if any(len(letter) != 1 or not letter.islower() for letter in self.letters):
            problems.append("letters must be single lower-case letters")
        problems += self._length_problems()
        if set(self.value_ranges) - set(self.units):
            problems.append(f"value_ranges names units it does not allow: {sorted(set(self.value_ranges) - set(self.units))}")
        if problems:
            raise ValueError(f"entity {self.name!r}: " + "; ".join(problems))

    def _length_problems(self) -> list[str]:
        """What is wrong with the drawing and group facts (every length needs them, nothing else has them)."""
        problems = []
        choices = (("drawing_role", DRAWING_ROLES), ("line_orientation", LINE_ORIENTATIONS),
                   ("group_position", GROUP_POSITIONS), ("size_end", SIZE_ENDS))
        for label, allowed in choices:
            value = getattr(self, label)
            if self.dimension and value not in allowed:
                problems.append(f"{label} must be one of {', '.join(a for a in allowed if a)}, not {value!r}")
            elif not self.dimension and value:
                problems.append(f"{label} is for lengths (dimension=True) only")
        if self.dimension and not self.letters:
            problems.append("a length needs letters (drawings and groups print it by its letter)")
        if not self.dimension and (self.rotated_text or self.header_words):
            problems.append("rotated_text and header_words are for lengths (dimension=True) only")
        for word in self.header_words:
            if not re.fullmatch(r"[a-z]+", word) or word[0] not in self.letters:
                problems.append(f"header word {word!r} must be lower-case letters starting with one of its letters")
        return problems

    def keyword_re(self) -> re.Pattern[str]:
        return _word_re(self.keywords)

    def competing_re(self) -> re.Pattern[str] | None:
        return _word_re(self.competing_keywords) if self.competing_keywords else None


@cache
def _word_re(alternation: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z])(?:{alternation})(?![a-z])")


SPECS: tuple[EntitySpec, ...] = (
    EntitySpec(
        "width", _LENGTH, _LENGTH_PRIOR, "centimetre", (0.0001, 20.0),
        r"width|wide|w|" + _DIMENSION_WORDS, dimension=True, letters=("w",),
        drawing_role="below", line_orientation="horizontal", group_position="first", size_end="smallest",
        header_words=("width",),
    ),
    EntitySpec(
        "depth", _LENGTH, _LENGTH_PRIOR, "centimetre", (0.0001, 20.0),
        r"depth|deep|d|length|long|l|thickness|thick|" + _DIMENSION_WORDS, dimension=True, letters=("d", "l"),
        drawing_role="receding", line_orientation="diagonal", group_position="middle", size_end="largest",
        header_words=("depth", "length"),
    ),
    EntitySpec(
        "height", _LENGTH, _LENGTH_PRIOR, "centimetre", (0.0001, 20.0),
        r"height|high|tall|h|" + _DIMENSION_WORDS, dimension=True, letters=("h",),
        drawing_role="beside", line_orientation="vertical", group_position="last", rotated_text=True,
        header_words=("height",),
    ),
    EntitySpec(
        "item_weight", _MASS,
        {"gram": 0.62, "kilogram": 0.12, "pound": 0.08, "ounce": 0.08, "milligram": 0.07, "microgram": 0.01,
         "ton": 0.005},
        "gram", (0.01, 500_000.0),
        r"net\s*wt|net\s*weight|net\s*wgt|n\.?\s*w\.?|weight|wt|wgt|peso|poids|gewicht|netto|"
        r"net|contents?|inhalt|contenu",
        competing_keywords=r"capacity|max(?:imum)?|load|supports?|holds?|bearing",
    ),
    EntitySpec(
        "maximum_weight_recommendation", _MASS,
        {"kilogram": 0.41, "pound": 0.31, "gram": 0.13, "ton": 0.07, "ounce": 0.045, "milligram": 0.015,
         "microgram": 0.007},
        "kilogram", (100.0, 50_000_000.0),
        r"max(?:imum)?|load|capacity|up\s*to|supports?|holds?|bearing|limit|withstand",
        competing_keywords=r"(?:item|net|product)\s*w(?:eigh)?t",
        value_ranges={
            "kilogram": ValueRange(2, 300, 0.92, (5, 10, 15, 20, 25, 30, 50, 100, 120, 150, 200, 250), 0.55),
            "pound": ValueRange(5, 800, 0.93, (10, 20, 25, 50, 100, 150, 250, 300, 330, 400, 500), 0.55),
            "gram": ValueRange(50, 2000, 0.97, (100, 200, 500, 1000), 0.5),
            "ton": ValueRange(1, 20, 0.9, (1, 2, 3, 5, 10), 0.5),
            "ounce": ValueRange(1, 50, 0.7, (8, 16, 32), 0.4),
            "milligram": ValueRange(10, 2000, 0.95, (100, 500), 0.4),
        },
    ),
    EntitySpec(
        "voltage", frozenset({"kilovolt", "millivolt", "volt"}),
        {"volt": 0.97, "kilovolt": 0.02, "millivolt": 0.01},
        "volt", (0.5, 50_000.0),
        r"volt(?:age)?s?|input|output|rated|ac|dc|power\s*supply|battery",
    ),
    EntitySpec(
        "wattage", frozenset({"kilowatt", "watt"}),
        {"watt": 0.97, "kilowatt": 0.03},
        "watt", (0.1, 100_000.0),
        r"power|watt(?:age)?s?|rated|output|max|consumption",
    ),
    EntitySpec(
        "item_volume",
        frozenset({"centilitre", "cubic foot", "cubic inch", "cup", "decilitre", "fluid ounce", "gallon",
                   "imperial gallon", "litre", "microlitre", "millilitre", "pint", "quart"}),
        {"millilitre": 0.47, "fluid ounce": 0.27, "litre": 0.12, "gallon": 0.025, "cubic inch": 0.02,
         "pint": 0.015, "quart": 0.015, "decilitre": 0.013, "cup": 0.011, "cubic foot": 0.007,
         "centilitre": 0.005, "imperial gallon": 0.002, "microlitre": 0.002},
        "millilitre", (0.5, 2_000_000.0),
        r"volume|capacity|net\s*contents?|contents?|vol|net|inhalt|contenu|holds?",
    ),
)

# The table by name, in the order above (which is the order of reports and of the network's entity ids).
ENTITY_SPECS: dict[str, EntitySpec] = {}
for _spec in SPECS:
    if _spec.name in ENTITY_SPECS:
        raise ValueError(f"entity {_spec.name!r} is declared twice")
    ENTITY_SPECS[_spec.name] = _spec


def entity_spec(name: str) -> EntitySpec:
    """The entity's entry; ValueError for a name that is not in the table."""
    spec = ENTITY_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown entity {name!r} (known: {', '.join(ENTITY_SPECS)})")
    return spec


def canonical_entity_name(text: str) -> str:
    """The table's name for an entity name as a catalog may spell it (``Item_Weight``, ``item weight``,
    ``ITEM-WEIGHT``): case, spaces, hyphens and repeated underscores do not make another entity. A text that
    names none is returned trimmed, for the row's ``unknown_entity`` message."""
    text = text.strip()
    if text in ENTITY_SPECS:
        return text
    folded = re.sub(r"[\s_-]+", "_", text.lower())
    return folded if folded in ENTITY_SPECS else text


def dimension_specs() -> list[EntitySpec]:
    """The lengths of a product (``dimension=True``), in table order, read from the table on every use."""
    return [spec for spec in ENTITY_SPECS.values() if spec.dimension]


@contextmanager
def registered(*specs: EntitySpec) -> Iterator[tuple[EntitySpec, ...]]:
    """The table with ``specs`` in it for the block's duration, as it was afterwards.

    A new name goes last (so it gets the next entity id of a network built meanwhile); an existing name is
    replaced in its place (say, to narrow a neighbour's keywords). Every step reads the table when used,
    so this is how a test or an experiment tries an entity without editing the table.
    """
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"entities registered twice: {names}")
    before = dict(ENTITY_SPECS)
    try:
        for spec in specs:
            ENTITY_SPECS[spec.name] = spec
        yield specs
    finally:
        ENTITY_SPECS.clear()
        ENTITY_SPECS.update(before)


class _EntityNames(Sequence[str]):
    """The entity names, in table order, read from the table on every use."""

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        return list(ENTITY_SPECS)[i]

    def __len__(self) -> int:
        return len(ENTITY_SPECS)

    def __iter__(self) -> Iterator[str]:
        return iter(list(ENTITY_SPECS))

    def __contains__(self, name: object) -> bool:
        return name in ENTITY_SPECS

    def __repr__(self) -> str:
        return repr(tuple(ENTITY_SPECS))


class _EntityUnits(Mapping[str, frozenset[str]]):
    """entity name -> allowed units, read from the table on every use."""

    def __getitem__(self, name: str) -> frozenset[str]:
        return ENTITY_SPECS[name].units

    def __iter__(self) -> Iterator[str]:
        return iter(list(ENTITY_SPECS))

    def __len__(self) -> int:
        return len(ENTITY_SPECS)


ENTITIES: Sequence[str] = _EntityNames()
ENTITY_UNITS: Mapping[str, frozenset[str]] = _EntityUnits()
