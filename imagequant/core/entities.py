"""Every entity ImageQuant can read, one :class:`EntitySpec` each, in one table.

An entry says everything the pure steps need about an entity: its allowed units (the challenge's list),
how often each unit is the label's unit, the unit a bare number is read in, the plausible magnitude, the
words that name it on packaging, the words that name a neighbouring entity instead, and whether it is a
length of a drawing. Units, candidates, rules and the network all read this table; adding an entity is one
entry here plus its renderer in :mod:`imagequant.synthetic`.

The table is checked when imported (every field consistent, every regular expression valid), and
:mod:`imagequant.core.units` checks that every unit named here is a unit it can convert.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

_LENGTH = frozenset({"centimetre", "foot", "inch", "metre", "millimetre", "yard"})
_MASS = frozenset({"gram", "kilogram", "microgram", "milligram", "ounce", "pound", "ton"})
# Share of each unit among dimension labels (CHALLENGE.md statistics and the public train labels).
_LENGTH_PRIOR = {"centimetre": 0.50, "inch": 0.34, "millimetre": 0.14, "metre": 0.012, "foot": 0.01,
                 "yard": 0.001}
_DIMENSION_WORDS = r"size|dimensions?|dims?|measures?"


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
        if problems:
            raise ValueError(f"entity {self.name!r}: " + "; ".join(problems))

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
    ),
    EntitySpec(
        "depth", _LENGTH, _LENGTH_PRIOR, "centimetre", (0.0001, 20.0),
        r"depth|deep|d|length|long|l|thickness|thick|" + _DIMENSION_WORDS, dimension=True, letters=("d", "l"),
    ),
    EntitySpec(
        "height", _LENGTH, _LENGTH_PRIOR, "centimetre", (0.0001, 20.0),
        r"height|high|tall|h|" + _DIMENSION_WORDS, dimension=True, letters=("h",),
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
