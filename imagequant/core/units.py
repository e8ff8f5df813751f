"""Entities, units, label parsing and prediction formatting in the Amazon ML Challenge 2024 format.

Everything here is pure string/number logic: the allowed-unit table, the aliases packaging prints for
each unit, conversion to a base unit per dimension, the label parser (which must classify every one of
the noisy training labels without raising) and the strict output formatter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from imagequant.core.entities import ENTITIES, ENTITY_SPECS, ENTITY_UNITS

__all__ = ["ENTITIES", "ENTITY_UNITS"]  # re-exported: most callers need them beside the unit functions

# --- allowed units per entity: the entity table (CHALLENGE.md) -----------------------------------------

# --- conversion to a base unit per dimension -----------------------------------------------------------
# Base units: metre (length), gram (mass), volt, watt, millilitre (volume). "ton" is taken as the metric
# tonne and the US customary cup/pint/quart/gallon are used; those choices only affect how recurrence
# across units is judged, never what is printed.
UNIT_DIMENSION: dict[str, str] = {}
UNIT_FACTOR: dict[str, float] = {}


def _register(dimension: str, factors: dict[str, float]) -> None:
    for unit, factor in factors.items():
        UNIT_DIMENSION[unit] = dimension
        UNIT_FACTOR[unit] = factor


_register(
    "length",
    {
        "millimetre": 0.001,
        "centimetre": 0.01,
        "metre": 1.0,
        "inch": 0.0254,
        "foot": 0.3048,
        "yard": 0.9144,
    },
)
_register(
    "mass",
    {
        "microgram": 1e-6,
        "milligram": 1e-3,
        "gram": 1.0,
        "kilogram": 1000.0,
        "ounce": 28.349523125,
        "pound": 453.59237,
        "ton": 1_000_000.0,
    },
)
_register("voltage", {"millivolt": 1e-3, "volt": 1.0, "kilovolt": 1000.0})
_register("power", {"watt": 1.0, "kilowatt": 1000.0})
_register(
    "volume",
    {
        "microlitre": 1e-3,
        "millilitre": 1.0,
        "centilitre": 10.0,
        "decilitre": 100.0,
        "litre": 1000.0,
        "fluid ounce": 29.5735295625,
        "cup": 236.5882365,
        "pint": 473.176473,
        "quart": 946.352946,
        "gallon": 3785.411784,
        "imperial gallon": 4546.09,
        "cubic inch": 16.387064,
        "cubic foot": 28316.846592,
    },
)
_unknown = sorted({u for spec in ENTITY_SPECS.values() for u in spec.units} - set(UNIT_FACTOR))
if _unknown:
    raise ValueError(f"the entity table names units that have no conversion here: {_unknown}")
ALL_UNITS: tuple[str, ...] = tuple(sorted(UNIT_FACTOR))


def to_base(value: float, unit: str) -> tuple[float, str]:
    """``value`` in ``unit`` converted to its dimension's base unit: (base value, dimension name)."""
    try:
        return value * UNIT_FACTOR[unit], UNIT_DIMENSION[unit]
    except KeyError:
        raise ValueError(f"unknown unit {unit!r}") from None


# --- aliases: what packaging prints -> canonical unit ----------------------------------------------------
# Keys are matched case-insensitively after dots are turned into spaces and spaces collapsed
# ("FL. OZ." -> "fl oz"), except the few case-sensitive spellings in _CASE_SENSITIVE.
_ALIAS_GROUPS: dict[str, tuple[str, ...]] = {
    "millimetre": ("mm", "mms", "millimeter", "millimeters", "millimetre", "millimetres"),
    "centimetre": ("cm", "cms", "centimeter", "centimeters", "centimetre", "centimetres"),
    "metre": ("m", "mtr", "mtrs", "meter", "meters", "metre", "metres"),
    "inch": ("in", "inch", "inches", "inchs", '"', "″", "''", "”", "“", "‟", "′′"),
    "foot": ("ft", "feet", "foot", "'", "′", "’"),
    "yard": ("yd", "yds", "yard", "yards"),
    "microgram": ("mcg", "µg", "μg", "ug", "microgram", "micrograms"),
    "milligram": ("mg", "mgs", "milligram", "milligrams", "milligramme", "milligrammes"),
    "gram": (
        "g",
        "gm",
        "gms",
        "gr",
        "grs",
        "gram",
        "grams",
        "gramm",
        "gramme",
        "grammes",
        "gramos",
        "grammi",
    ),
    "kilogram": ("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms", "kilogramme", "kilogrammes"),
    "ounce": ("oz", "ozs", "ounce", "ounces", "onzas"),
    "pound": ("lb", "lbs", "ib", "ibs", "pound", "pounds"),
    "ton": ("t", "ton", "tons", "tonne", "tonnes"),
    "millivolt": ("mv", "millivolt", "millivolts"),
    "volt": ("v", "vac", "vdc", "v~", "v ac", "v dc", "volt", "volts", "voltage"),
    "kilovolt": ("kv", "kilovolt", "kilovolts"),
    "watt": ("w", "watt", "watts"),
    "kilowatt": ("kw", "kilowatt", "kilowatts"),
    "microlitre": ("µl", "μl", "ul", "microlitre", "microliter", "microlitres", "microliters"),
    "millilitre": (
        "ml",
        "mls",
        "millilitre",
        "milliliter",
        "millilitres",
        "milliliters",
        "cc",
        "cm3",
        "cm³",
    ),
    "centilitre": ("cl", "centilitre", "centiliter", "centilitres", "centiliters"),
    "decilitre": ("dl", "decilitre", "deciliter", "decilitres", "deciliters"),
    "litre": ("l", "lt", "ltr", "ltrs", "lts", "litre", "liter", "litres", "liters", "litro", "litros"),
    "fluid ounce": ("fl oz", "floz", "fl ozs", "f oz", "fluid ounce", "fluid ounces", "fl ounce", "fl ounces"),
    "gallon": ("gal", "gals", "gallon", "gallons"),
    "imperial gallon": ("imperial gallon", "imperial gallons", "imp gal"),
    "pint": ("pt", "pts", "pint", "pints"),
    "quart": ("qt", "qts", "quart", "quarts"),
    "cup": ("cup", "cups"),
    "cubic foot": ("cu ft", "cuft", "cubic foot", "cubic feet", "ft3", "ft³"),
    "cubic inch": ("cu in", "cubic inch", "cubic inches", "in3", "in³"),
}
# Spellings whose case matters: "MV" is megavolt, not millivolt (no entity allows it).
_CASE_SENSITIVE: dict[str, str | None] = {"MV": None}

UNIT_ALIASES: dict[str, str] = {}
for _unit, _aliases in _ALIAS_GROUPS.items():
    for _alias in (*_aliases, _unit):
        UNIT_ALIASES[_alias] = _unit
# Multi-word spellings with the spaces lost, as OCR and tight print give them ("80cubicinches", "FLOZ"):
# only spellings that name one unit whichever way they are spaced.
_COMPACT_ALIASES: dict[str, str] = {}
for _alias, _unit in UNIT_ALIASES.items():
    _COMPACT_ALIASES.setdefault(_alias.replace(" ", ""), _unit)
    assert _COMPACT_ALIASES[_alias.replace(" ", "")] == _unit, _alias

_SPACES = re.compile(r"\s+")


def alias_key(text: str) -> str:
    """Lower-case, dots to spaces, collapsed whitespace: 'FL. OZ.' -> 'fl oz'."""
    return _SPACES.sub(" ", text.replace(".", " ")).strip().lower()


def normalize_unit(text: str, entity: str | None = None) -> str | None:
    """Canonical unit for a printed unit spelling, or None.

    With ``entity`` only units allowed for it are returned, and an ounce of a volume is a fluid ounce.
    """
    if not isinstance(text, str):
        return None
    raw = text.strip().strip(",;:()[]")
    if raw in _CASE_SENSITIVE:
        unit = _CASE_SENSITIVE[raw]
    else:
        key = alias_key(raw)
        unit = UNIT_ALIASES.get(key) or _COMPACT_ALIASES.get(key.replace(" ", ""))
        if unit is None and raw in UNIT_ALIASES:  # symbols such as '"' that alias_key keeps as they are
            unit = UNIT_ALIASES[raw]
    if unit is None:
        return None
    if entity is None:
        return unit
    allowed = ENTITY_UNITS.get(entity)
    if allowed is None:
        return None
    if unit == "ounce" and "fluid ounce" in allowed and "ounce" not in allowed:
        unit = "fluid ounce"  # an entity measured in fluid ounces and not in ounces is a volume
    return unit if unit in allowed else None


# --- label parsing -------------------------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:\s?[eE][-+]?\d+)?"
_VALUE_RE = re.compile(rf"^\s*({_NUM})\s*([^\d\s].*?)?\s*$")
_BRACKET_RANGE_RE = re.compile(rf"^\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*\]\s*(.*?)\s*$")
_TO_RANGE_RE = re.compile(rf"^\s*({_NUM})\s*([^\d\s].*?)?\s+to\s+({_NUM})\s*([^\d\s].*?)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedLabel:
    """One label classified: kind is value, range, unit_not_allowed, unparseable or empty."""

    kind: str
    value: float | None = None
    unit: str | None = None  # canonical unit; for unit_not_allowed the label's own unit text
    low: float | None = None
    high: float | None = None
    raw: str = ""


def _to_float(text: str) -> float | None:
    try:
        x = float(text.replace(" ", ""))
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _label_unit(text: str | None, entity: str | None) -> tuple[str | None, bool]:
    """(canonical unit, allowed) for a label's unit text; canonical None when it is no known unit."""
    if not text:
        return None, False
    canonical = text.strip() if text.strip() in UNIT_FACTOR else normalize_unit(text)
    if canonical is None:
        return None, False
    if entity is None:
        return canonical, True
    # no ounce -> fluid ounce remapping here: a label that says "ounce" for a volume can never be matched
    return canonical, canonical in ENTITY_UNITS.get(entity, ())


@lru_cache(maxsize=65536)
def _parse_label_cached(text: str, entity: str | None) -> ParsedLabel:
    raw = text
    if not text.strip() or text.strip().lower() in {"nan", "none", "null"}:
        return ParsedLabel("empty", raw=raw)
    m = _BRACKET_RANGE_RE.match(text)
    if m:
        low, high = _to_float(m.group(1)), _to_float(m.group(2))
        unit, _ = _label_unit(m.group(3), entity)
        if low is None or high is None:
            return ParsedLabel("unparseable", raw=raw)
        return ParsedLabel("range", unit=unit, low=low, high=high, raw=raw)
    m = _TO_RANGE_RE.match(text)
    if m:
        low, high = _to_float(m.group(1)), _to_float(m.group(3))
        unit, _ = _label_unit(m.group(4) or m.group(2), entity)
        if low is not None and high is not None:
            return ParsedLabel("range", unit=unit, low=low, high=high, raw=raw)
    m = _VALUE_RE.match(text)
    if not m:
        return ParsedLabel("unparseable", raw=raw)
    value = _to_float(m.group(1))
    unit_text = (m.group(2) or "").strip()
    if value is None or not unit_text:
        return ParsedLabel("unparseable", raw=raw)
    unit, allowed = _label_unit(unit_text, entity)
    if unit is not None and allowed:
        return ParsedLabel("value", value=value, unit=unit, raw=raw)
    if re.fullmatch(r"[^\W\d_]+(?:[ \-][^\W\d_]+)*", unit_text):
        # a real word that is no allowed unit (horsepower, person, ...) or an allowed unit of another entity
        return ParsedLabel("unit_not_allowed", value=value, unit=unit or unit_text.lower(), raw=raw)
    return ParsedLabel("unparseable", raw=raw)


def parse_label(text: object, entity: str | None = None) -> ParsedLabel:
    """Classify a label such as ``34.0 gram`` or ``[10.0, 20.0] gram``; never raises.

    Without ``entity`` any allowed unit of any entity counts as allowed.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ParsedLabel("empty", raw="")
    if not isinstance(text, str):
        text = str(text)
    try:
        return _parse_label_cached(text, entity)
    except Exception:  # the contract is "never raises" on any label
        return ParsedLabel("unparseable", raw=text)


def matchable_label(text: object, entity: str | None = None) -> ParsedLabel | None:
    """The label parsed when some answer can equal it: one value, not negative, in a unit ``entity`` allows;
    None for a range, an unparseable label, one in another unit or a negative quantity (no answer is
    negative), which the challenge never scores as matched."""
    parsed = parse_label(text, entity)
    return parsed if parsed.kind == "value" and parsed.value is not None and parsed.value >= 0 else None


def label_can_match(text: object, entity: str | None = None) -> bool:
    """Whether some answer can equal the label (:func:`matchable_label`)."""
    return matchable_label(text, entity) is not None


# --- output formatting ------------------------------------------------------------------------------------


def format_value(x: float) -> str:
    """A float in plain decimal notation with at least one decimal: 500.0, 0.0005, 12.5 (never 5e-4)."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"cannot format non-finite value {x!r}")
    if x == 0:
        return "0.0"
    text = format(Decimal(repr(x)), "f")  # repr is the shortest round-trip form; Decimal drops the exponent
    if "." not in text:
        text += ".0"
    return text


def format_prediction(value: float, unit: str, entity: str) -> str:
    """``"x unit"`` for the output file; ValueError if the unit is not allowed for the entity."""
    if unit not in ENTITY_UNITS.get(entity, ()):
        raise ValueError(f"unit {unit!r} is not allowed for entity {entity!r}")
    return f"{format_value(value)} {unit}"


_PREDICTION_RE = re.compile(r"-?\d+(?:\.\d+)? ([a-z]+(?: [a-z]+)?)")


def is_valid_prediction(text: str, entity: str) -> bool:
    """The challenge's output rule: empty, or a plain-decimal number, one space, an allowed unit."""
    if text == "":
        return True
    if not isinstance(text, str):
        return False
    m = _PREDICTION_RE.fullmatch(text)
    return bool(m) and m.group(1) in ENTITY_UNITS.get(entity, ())


def values_equal(a: str, b: str) -> bool:
    """Numeric equality of two ``"x unit"`` strings; ranges and anything unparsed never match."""
    pa, pb = parse_label(a), parse_label(b)
    if pa.kind != "value" or pb.kind != "value" or pa.unit != pb.unit:
        return False
    assert pa.value is not None and pb.value is not None
    return math.isclose(pa.value, pb.value, rel_tol=1e-9, abs_tol=1e-12)
