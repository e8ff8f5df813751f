"""Synthetic labeled product images in the challenge format, for the demo and every test.

Real catalog images may not be redistributed, so the project makes its own: packages, bottles, devices,
shelves, spec tables and dimension drawings drawn with PIL, with value text written the ways packaging
writes it (``Net Wt. 17.6 oz (500 g)``, ``12V DC``, ``5.9"``, ``30 x 20 x 10 cm``), distractor numbers,
varied fonts (the ones matplotlib ships), backgrounds and degradations. Everything is drawn from a seeded
``numpy.random.Generator``: the same seed gives byte-identical JPEGs and CSVs on the same library versions.

Main entry points:

* :func:`generate_sample` writes ``images/*.jpg``, ``labels.csv`` and ``catalog.csv``.
* :func:`make_spec` draws the content of one image; :func:`render_item` draws it; :func:`spec_truths`
  lists its ``(entity, value, unit)`` truths. Tests can build an :class:`ItemSpec` by hand instead.
"""

from __future__ import annotations

import functools
import io
import math
import string
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from imagequant.core.entities import ENTITY_SPECS, ValueRange, dimension_specs, entity_spec
from imagequant.core.units import ENTITIES, ENTITY_UNITS, format_value

DEFAULT_LINK_BASE = "https://images.example.com/sample/"
DIFFICULTIES = ("easy", "mixed", "hard")

T = TypeVar("T")

# --------------------------------------------------------------------------------------------------
# Units: plausible value ranges and printed spellings. How often each unit is the label's unit is the
# entity table's unit_prior, and an entity whose values differ from a unit's usual ones (a maximum load
# is heavier than an item weight) says so in its value_ranges.
# --------------------------------------------------------------------------------------------------

_DIM_RANGES = {
    "centimetre": ValueRange(1.5, 200, 0.7, (5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120), 0.3),
    "inch": ValueRange(0.5, 80, 0.45, (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 18, 24, 36), 0.3),
    "millimetre": ValueRange(8, 900, 0.95, (10, 20, 25, 50, 100, 150, 200, 300, 500), 0.25),
    "metre": ValueRange(0.3, 5, 0.4, (1, 1.5, 2, 3), 0.3),
    "foot": ValueRange(1, 12, 0.75, (2, 3, 4, 5, 6, 8, 10), 0.4),
    "yard": ValueRange(1, 5, 0.8, (1, 2, 3), 0.4),
}
# A value's usual range per unit, where the entity's value_ranges names none.
_RANGES: dict[str, ValueRange] = {
    "gram": ValueRange(2, 1000, 0.85, (50, 100, 125, 150, 200, 250, 300, 400, 450, 500, 750, 1000), 0.45),
    "kilogram": ValueRange(0.2, 25, 0.5, (0.5, 1, 1.5, 2, 2.5, 5, 10, 20, 25), 0.45),
    "pound": ValueRange(0.3, 50, 0.5, (1, 2, 3, 5, 10, 25, 50), 0.4),
    "ounce": ValueRange(0.5, 64, 0.5, (1, 2, 4, 6, 8, 12, 16, 32), 0.45),
    "milligram": ValueRange(5, 5000, 0.97, (50, 100, 200, 250, 300, 400, 500, 1000), 0.5),
    "microgram": ValueRange(5, 5000, 1.0, (25, 50, 100, 400, 500, 1000, 5000), 0.5),
    "ton": ValueRange(0.5, 30, 0.8, (1, 2, 3, 5, 10), 0.5),
    "volt": ValueRange(1.2, 240, 0.8, (1.5, 3, 3.7, 5, 6, 9, 12, 18, 20, 24, 36, 48, 110, 120, 220, 230, 240), 0.7),
    "kilovolt": ValueRange(1, 50, 0.8, (1, 5, 10, 15, 20), 0.5),
    "millivolt": ValueRange(10, 900, 0.95, (100, 200, 500), 0.4),
    "watt": ValueRange(1, 3000, 0.94, (3, 5, 7, 9, 10, 15, 20, 25, 40, 60, 75, 100, 150, 200, 500, 800, 1000,
                                   1200, 1500, 1800, 2000, 2200), 0.6),
    "kilowatt": ValueRange(0.5, 10, 0.5, (1, 1.5, 2, 2.2, 3), 0.5),
    "millilitre": ValueRange(5, 2000, 0.97, (5, 10, 15, 30, 50, 75, 100, 120, 150, 200, 250, 300, 330, 350,
                                         400, 500, 750, 1000), 0.6),
    "fluid ounce": ValueRange(0.5, 128, 0.7, (1, 2, 3.4, 4, 6, 8, 12, 16, 16.9, 20, 24, 32, 64), 0.6),
    "litre": ValueRange(0.2, 20, 0.75, (0.5, 1, 1.5, 2, 3, 4, 5, 10, 20), 0.6),
    "gallon": ValueRange(0.5, 10, 0.9, (1, 2, 5), 0.6),
    "cup": ValueRange(1, 12, 0.9, (2, 4, 8, 10, 12), 0.5),
    "pint": ValueRange(1, 4, 0.95, (1, 2), 0.5),
    "quart": ValueRange(1, 8, 0.95, (1, 2, 4, 6), 0.5),
    "cubic foot": ValueRange(0.5, 30, 0.6, (1, 2, 5, 10), 0.4),
    "cubic inch": ValueRange(5, 300, 0.6, (), 0.0),
    "centilitre": ValueRange(5, 100, 0.95, (25, 33, 50, 70, 75), 0.6),
    "decilitre": ValueRange(1, 10, 0.8, (1, 2, 5), 0.5),
    "microlitre": ValueRange(10, 1000, 1.0, (100, 200, 500), 0.5),
    "imperial gallon": ValueRange(0.5, 10, 0.9, (1, 2, 5), 0.6),
    **_DIM_RANGES,
}

# Printed spellings per canonical unit; earlier entries are more common.
_SPELLINGS: dict[str, tuple[str, ...]] = {
    "gram": ("g", "g", "g", "G", "gm", "grams"),
    "kilogram": ("kg", "kg", "KG", "Kg", "kgs", "kilograms"),
    "milligram": ("mg", "mg", "MG"),
    "microgram": ("mcg", "mcg", "µg"),
    "ounce": ("oz", "oz", "OZ", "oz.", "ounces"),
    "pound": ("lb", "lbs", "LB", "LBS", "lb.", "pounds"),
    "ton": ("t", "ton", "tons", "T"),
    "volt": ("V", "V", "V", "v", "volts", "Volt"),
    "kilovolt": ("kV", "KV"),
    "millivolt": ("mV",),
    "watt": ("W", "W", "W", "w", "watts", "Watt", "WATTS"),
    "kilowatt": ("kW", "KW", "kw"),
    "millilitre": ("ml", "mL", "ML", "ml", "ml."),
    "litre": ("L", "L", "l", "Ltr", "litre", "liter", "LITRE"),
    "fluid ounce": ("fl oz", "FL OZ", "fl. oz.", "FL.OZ", "fl.oz"),
    "gallon": ("gal", "gallon", "gallons", "GAL"),
    "cup": ("cups", "cup", "Cups"),
    "pint": ("pt", "pint", "pints"),
    "quart": ("qt", "quart", "quarts"),
    "cubic foot": ("cu ft", "cu. ft.", "cubic feet"),
    "cubic inch": ("cu in", "cubic inches"),
    "centilitre": ("cl", "cL", "CL"),
    "decilitre": ("dl", "dL"),
    "microlitre": ("µl", "uL"),
    "imperial gallon": ("imp gal", "imperial gallon"),
    "centimetre": ("cm", "cm", "cm", "CM", "Cm"),
    "millimetre": ("mm", "mm", "MM"),
    "inch": ('"', '"', "in", "inch", "inches", "IN"),
    "metre": ("m", "m", "M", "meter", "metre"),
    "foot": ("ft", "ft", "'", "feet", "FT"),
    "yard": ("yd", "yards"),
}
_NO_SPACE_SPELLINGS = {'"', "'"}

# Conversions used for the second quantity of a dual print ("17.6 oz (500 g)"): factor from -> to.
_CONVERSIONS: dict[str, tuple[str, float]] = {
    "gram": ("ounce", 1 / 28.349523),
    "ounce": ("gram", 28.349523),
    "kilogram": ("pound", 2.2046226),
    "pound": ("kilogram", 0.45359237),
    "millilitre": ("fluid ounce", 1 / 29.573530),
    "fluid ounce": ("millilitre", 29.573530),
    "litre": ("fluid ounce", 33.814023),
    "gallon": ("litre", 3.7854118),
    "centimetre": ("inch", 1 / 2.54),
    "inch": ("centimetre", 2.54),
    "millimetre": ("inch", 1 / 25.4),
}

# --------------------------------------------------------------------------------------------------
# Words for brands, titles and distractors.
# --------------------------------------------------------------------------------------------------

_SYLLABLES = ("ve", "lo", "ra", "ni", "ta", "ko", "mi", "sa", "dor", "len", "ca", "vi", "ter", "mon", "zu",
              "pa", "ri", "sol", "ben", "ar", "el", "no", "ka", "fi", "gro", "lux", "tek", "ma", "do")
_TITLES: dict[str, tuple[str, ...]] = {
    "food": ("Organic Green Tea", "Roasted Almonds", "Dark Chocolate", "Basmati Rice", "Protein Powder",
             "Dog Food", "Coffee Beans", "Rolled Oats", "Sea Salt", "Trail Mix", "Pasta Fusilli",
             "Cocoa Powder", "Chia Seeds", "Honey Granola", "Cat Treats", "Peanut Butter"),
    "supplement": ("Vitamin C", "Magnesium", "Omega-3", "Zinc Tablets", "Vitamin D3", "Biotin",
                   "Multivitamin", "Iron Complex", "Calcium + D", "Probiotic"),
    "liquid": ("Shampoo", "Olive Oil", "Hand Soap", "Mineral Water", "Body Lotion", "Orange Juice",
               "Motor Oil", "Shower Gel", "Dish Soap", "Coconut Milk", "Glass Cleaner", "Mouthwash"),
    "device": ("Power Adapter", "Hair Dryer", "Electric Kettle", "Drill Battery", "Floodlight",
               "Solar Panel", "Blender", "USB Charger", "Space Heater", "Soldering Iron", "LED Driver",
               "Vacuum Cleaner", "Rice Cooker", "Desk Lamp"),
    "bulb": ("LED Bulb", "Halogen Lamp", "Filament Bulb", "Smart Bulb", "Spot Light"),
    "battery": ("Li-ion Battery", "Rechargeable Cell", "Battery Pack", "Alkaline Battery"),
    "furniture": ("Wall Shelf", "Storage Rack", "Steel Hook", "Office Chair", "Bike Stand", "Hammock",
                  "Floating Shelf", "Step Stool", "Garment Rack", "Tool Cart"),
    "general": ("Storage Box", "Desk Organizer", "Plant Pot", "Picture Frame", "Tool Case", "Laundry Basket",
                "Cutting Board", "Travel Bag", "Table Lamp", "Pillow", "Shoe Rack", "Cabinet"),
}
_COUNTRIES = ("Germany", "Italy", "USA", "India", "China", "France", "Poland", "Japan", "Spain", "UK")
_FEATURES = ("100% natural", "NEW!", "Gluten free", "Non-GMO", "Premium quality", "Vegan", "BPA free",
             "Easy to install", "Waterproof", "Made in {country}", "Since 19{yy}", "2 Year warranty",
             "Pack of {k}", "{k} pcs", "{pct}% off", "ISO 9001", "Eco friendly", "Best seller",
             "Stainless steel", "Dishwasher safe", "Recyclable", "Family size")

# Group ids by product category (six-digit, like the challenge's).
_GROUP_IDS: dict[str, tuple[int, ...]] = {
    "food": (459516, 752266, 281678), "supplement": (524635, 675317), "liquid": (120569, 613912),
    "device": (709627, 271537), "bulb": (648011, 142913), "battery": (709627,), "furniture": (442321, 996491),
    "general": (294675, 970563, 311106, 560730),
}

_NAME_ALPHABET = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------------------
# Public data model.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """One labeled value printed in an image.

    ``text`` is the phrase as printed (``"Net Wt. 17.6 oz (500 g)"``); ``number_text`` is the number as
    printed in it (``"17.6"``, ``"1,500"``, ``"17,6"``). When ``text`` is empty the renderer prints a
    plain ``"<number> <unit symbol>"``.
    """

    entity: str
    value: float
    unit: str
    text: str = ""
    number_text: str = ""

    @property
    def label(self) -> str:
        """The challenge-format label, e.g. ``"500.0 gram"``."""
        return format_entity_value(self.value, self.unit)

    @property
    def printed_number(self) -> str:
        return self.number_text or plain_number(self.value)

    @property
    def printed_text(self) -> str:
        if self.text:
            return self.text
        spelling = _SPELLINGS.get(self.unit, (self.unit,))[0]
        return quantity_text(self.printed_number, spelling, space=spelling not in _NO_SPACE_SPELLINGS)


SCENE_KINDS = ("package", "bottle", "device", "infographic", "shelf", "dimension", "table")


@dataclass
class ItemSpec:
    """The content of one image: what it shows and which values it states.

    ``kind`` is one of :data:`SCENE_KINDS`; ``category`` picks the product look and title words (food,
    supplement, liquid, device, bulb, battery, furniture, general). ``lines`` are distractor lines
    (model numbers, prices, dates); ``confusers`` are same-entity numbers that are not the answer
    (``Serving size 30g``, ``Input: 100-240V~``). ``options`` holds scene flags, all optional:
    ``shape`` (box, bag, jar for packages; shelf, rack; box, bottle, device for drawings), ``nutrition``
    (a nutrition block on a package), ``sticker`` (a device's rating label), ``vertical`` (a battery
    standing up, its text turned 90 degrees), ``vertical_height`` (a drawing's height label turned 90
    degrees), ``combo`` (the shared ``(W x D x H) 30 x 20 x 10 cm`` text of a table).
    """

    kind: str
    truths: list[Truth]
    difficulty: str = "easy"
    size: tuple[int, int] = (800, 800)
    category: str = "general"
    brand: str = ""
    title: str = ""
    lines: list[str] = field(default_factory=list)
    confusers: list[str] = field(default_factory=list)  # same-entity numbers that are not the answer
    options: dict[str, Any] = field(default_factory=dict)


def layout_token_lines(lines: Sequence[tuple[Sequence[str], int]], confidences: Iterable[float]
                       ) -> tuple[list[Any], tuple[int, int]]:
    """OCR tokens of printed lines laid out top to bottom (``(words, text height)`` each, half a height
    between words, 25 px between lines, 640 px wide): what an engine would return for them, without an
    image. ``confidences`` gives each token's confidence in turn. Returns (tokens, (width, height))."""
    from imagequant.core.tokens import OcrToken

    conf = iter(confidences)
    tokens = []
    y = 20
    for line_no, (words, size) in enumerate(lines):
        x = 30
        for word_no, word in enumerate(words):
            w = size * max(1, len(word)) // 2
            tokens.append(OcrToken(word, float(next(conf)), x, y, w, size, 1, line_no, word_no))
            x += w + size // 2
        y += size + 25
    return tokens, (640, max(800, y + 20))


def spec_truths(spec: ItemSpec) -> list[tuple[str, float, str]]:
    """The ``(entity, value, unit)`` truths an image states, in row order."""
    return [(t.entity, t.value, t.unit) for t in spec.truths]


def plain_number(value: float) -> str:
    """``500.0 -> "500"``, ``17.60 -> "17.6"``: plain decimal, never exponent notation."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def format_entity_value(value: float, unit: str) -> str:
    """The challenge's label spelling: ``"500.0 gram"``, ``"30.5 centimetre"``."""
    return f"{format_value(value)} {unit}"


def quantity_text(number: str, spelling: str, space: bool) -> str:
    """A number and a unit symbol as printed: ``500g``, ``500 g``, ``5.9"``."""
    return f"{number}{' ' if space else ''}{spelling}"


# --------------------------------------------------------------------------------------------------
# Difficulty profiles.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    value_em: tuple[tuple[float, float, float], ...]  # (weight, lo, hi) em size of value text, x image side
    other_em: tuple[float, float]  # brand/title text
    small_em: tuple[float, float]  # distractor lines
    min_contrast: float  # luminance difference text vs its ground, 0..1
    p_low_contrast: float  # chance the contrast is only ~0.3
    p_dark_ground: float  # light text on a dark panel/background
    p_rotate: float
    max_rotate: float  # degrees, whole image
    p_blur: float
    blur: tuple[float, float]
    p_jpeg: float  # extra low-quality JPEG round trip
    jpeg_quality: tuple[int, int]
    p_downscale: float
    p_noise: float
    p_vertical: float  # height label rotated 90 degrees; vertical battery text
    p_confuser: float  # a same-entity distractor (serving size, input range, "replaces 60W")
    p_dual: float  # a second unit printed next to the value
    p_glued: float  # "500g" rather than "500 g" (glued units are harder to OCR: "5WATTS" -> "SWATTS")
    p_comma: float  # decimal comma
    p_thousands: float  # "1,500"
    p_squeeze: float  # horizontally condensed text
    fonts: tuple[str, ...]
    background: tuple[float, float, float, float]  # white, flat, gradient, noise
    n_lines: tuple[int, int]  # distractor lines per image
    save_quality: int


_ALL_FONTS = ("sans", "sans_bold", "sans_oblique", "sans_bold_oblique", "mono", "mono_bold", "serif",
              "serif_bold", "serif_italic", "stix", "stix_bold", "stix_italic", "cm_sans", "cm_roman",
              "cm_bold", "cm_mono")
_PROFILES: dict[str, _Profile] = {
    "easy": _Profile(
        # Tesseract's LSTM reads best at ~20-45 px cap height: very large text is misread more often.
        value_em=((1.0, 0.05, 0.075),), other_em=(0.04, 0.055), small_em=(0.03, 0.04), min_contrast=0.6,
        p_low_contrast=0.0, p_dark_ground=0.0, p_rotate=0.0, max_rotate=0.0, p_blur=0.0, blur=(0.0, 0.0),
        p_jpeg=0.0, jpeg_quality=(90, 90), p_downscale=0.0, p_noise=0.0, p_vertical=0.0, p_confuser=0.0,
        p_dual=0.15, p_glued=0.2, p_comma=0.0, p_thousands=0.0, p_squeeze=0.0,
        fonts=("sans", "sans_bold", "serif", "serif_bold", "mono_bold", "stix_bold", "cm_sans", "cm_bold"),
        background=(0.65, 0.25, 0.10, 0.0), n_lines=(0, 2), save_quality=92),
    "mixed": _Profile(
        value_em=((0.2, 0.022, 0.035), (0.45, 0.035, 0.065), (0.35, 0.065, 0.12)), other_em=(0.03, 0.07),
        small_em=(0.018, 0.032), min_contrast=0.45, p_low_contrast=0.05, p_dark_ground=0.2, p_rotate=0.25,
        max_rotate=4.0, p_blur=0.25, blur=(0.4, 1.1), p_jpeg=0.3, jpeg_quality=(40, 75), p_downscale=0.15,
        p_noise=0.12, p_vertical=0.6, p_confuser=0.35, p_dual=0.25, p_glued=0.5, p_comma=0.04, p_thousands=0.2,
        p_squeeze=0.25, fonts=_ALL_FONTS, background=(0.5, 0.2, 0.2, 0.1), n_lines=(1, 4), save_quality=88),
    "hard": _Profile(
        value_em=((0.45, 0.015, 0.028), (0.4, 0.028, 0.05), (0.15, 0.05, 0.09)), other_em=(0.025, 0.06),
        small_em=(0.014, 0.025), min_contrast=0.3, p_low_contrast=0.2, p_dark_ground=0.3, p_rotate=0.5,
        max_rotate=8.0, p_blur=0.45, blur=(0.6, 1.6), p_jpeg=0.5, jpeg_quality=(25, 60), p_downscale=0.35,
        p_noise=0.25, p_vertical=0.8, p_confuser=0.6, p_dual=0.35, p_glued=0.6, p_comma=0.08, p_thousands=0.3,
        p_squeeze=0.4, fonts=_ALL_FONTS, background=(0.35, 0.25, 0.25, 0.15), n_lines=(2, 5),
        save_quality=80),
}


# --------------------------------------------------------------------------------------------------
# Small random helpers (all draw from the one Generator passed in; no global RNG).
# --------------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, items: Sequence[T], weights: Sequence[float] | None = None) -> T:
    if weights is None:
        return items[int(rng.integers(len(items)))]
    w = np.asarray(weights, dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def _chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def _rint(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Integer in [lo, hi] inclusive."""
    return int(rng.integers(lo, hi + 1))


def _brand(rng: np.random.Generator) -> str:
    word = "".join(_pick(rng, _SYLLABLES) for _ in range(_rint(rng, 2, 3)))
    return word.upper() if _chance(rng, 0.4) else word.capitalize()


def _feature(rng: np.random.Generator) -> str:
    return _pick(rng, _FEATURES).format(country=_pick(rng, _COUNTRIES), yy=_rint(rng, 50, 99),
                                        k=_rint(rng, 2, 12), pct=_pick(rng, (10, 15, 20, 25, 30, 50)))


def _distractor(rng: np.random.Generator) -> str:
    """A line with numbers that are not the answer: model numbers, prices, dates, lot codes."""
    kind = _rint(rng, 0, 9)
    if kind == 0:
        return f"Model: {_pick(rng, ('XK', 'TR', 'MX', 'PL', 'A', 'HD'))}-{_rint(rng, 100, 9999)}"
    if kind == 1:
        return f"${_rint(rng, 2, 199)}.{_rint(rng, 0, 99):02d}"
    if kind == 2:
        return f"Best before {_rint(rng, 1, 12):02d}/{_rint(rng, 2025, 2029)}"
    if kind == 3:
        return f"Lot {_rint(rng, 10, 99)}{_pick(rng, 'ABCDEFK')}{_rint(rng, 100, 999)}"
    if kind == 4:
        return f"SKU {_rint(rng, 1000000, 9999999)}"
    if kind == 5:
        return f"EXP {_rint(rng, 1, 12):02d}/{_rint(rng, 25, 29)}"
    if kind == 6:
        return f"No. {_rint(rng, 10000, 99999)}"
    if kind == 7:
        return f"www.{_brand(rng).lower()}.com"
    return _feature(rng)


def _image_name(rng: np.random.Generator) -> str:
    """An 11-character name like the challenge's ("61aBc+2xY-L"), '+' and '-' kept rare."""
    head = _pick(rng, ("21", "31", "41", "51", "61", "71", "81", "91"))
    chars = []
    for _ in range(9):
        if _chance(rng, 0.03):
            chars.append(_pick(rng, "+-"))
        else:
            chars.append(_pick(rng, _NAME_ALPHABET))
    return head + "".join(chars)


# --------------------------------------------------------------------------------------------------
# Values and their printed phrases.
# --------------------------------------------------------------------------------------------------


def _sample_unit(rng: np.random.Generator, entity: str) -> str:
    shares = entity_spec(entity).unit_prior
    return _pick(rng, list(shares), list(shares.values()))


def _value_range(entity: str, unit: str) -> ValueRange:
    """The entity's own range for ``unit`` (the entity table), else the unit's usual one."""
    found = entity_spec(entity).value_ranges.get(unit) or _RANGES.get(unit)
    if found is None:
        raise ValueError(f"no value range for {unit!r} values of entity {entity!r}: give the entity's "
                         "value_ranges one")
    return found


def _sample_value(rng: np.random.Generator, entity: str, unit: str) -> float:
    rng_spec = _value_range(entity, unit)
    if rng_spec.nice and _chance(rng, rng_spec.p_nice):
        return float(_pick(rng, rng_spec.nice))
    value = math.exp(_uniform(rng, math.log(rng_spec.lo), math.log(rng_spec.hi)))
    if _chance(rng, rng_spec.p_int) and value >= 1.5:
        return float(round(value))
    decimals = 1 if value >= 1 or _chance(rng, 0.5) else 2
    return max(round(value, decimals), 10.0 ** -decimals)


def _number_text(rng: np.random.Generator, value: float, prof: _Profile) -> str:
    text = plain_number(value)
    if "." in text and _chance(rng, prof.p_comma):
        return text.replace(".", ",")
    if "." not in text and value >= 1000 and _chance(rng, prof.p_thousands):
        return f"{int(value):,}"
    return text


def _spelling(rng: np.random.Generator, unit: str) -> str:
    return _pick(rng, _SPELLINGS[unit])


def _qty(rng: np.random.Generator, number: str, unit: str, prof: _Profile) -> str:
    spelling = _spelling(rng, unit)
    space = spelling not in _NO_SPACE_SPELLINGS and not _chance(rng, prof.p_glued)
    return quantity_text(number, spelling, space)


def _alt_qty(rng: np.random.Generator, value: float, unit: str, prof: _Profile) -> str | None:
    """The same quantity in a second unit, for dual prints; None when there is no common conversion."""
    if unit not in _CONVERSIONS:
        return None
    other, factor = _CONVERSIONS[unit]
    alt = value * factor
    alt = round(alt) if alt >= 100 else round(alt, 1)
    if alt <= 0:
        return None
    return _qty(rng, plain_number(float(alt)), other, prof)


def make_truth(rng: np.random.Generator, entity: str, difficulty: str = "mixed", unit: str | None = None,
               value: float | None = None) -> Truth:
    """Draw a value for ``entity`` (unit and value drawn too unless given) and a phrase printing it."""
    _check_entities([entity])
    return _make_truth(rng, entity, _profile(difficulty), unit=unit, value=value)


def _make_truth(rng: np.random.Generator, entity: str, prof: _Profile, unit: str | None = None,
                value: float | None = None, phrase: bool = True) -> Truth:
    """Draw a value for ``entity`` and the phrase that prints it."""
    unit = unit or _sample_unit(rng, entity)
    value = _sample_value(rng, entity, unit) if value is None else value
    number = _number_text(rng, value, prof)
    q = _qty(rng, number, unit, prof)
    if _chance(rng, prof.p_dual) and RENDERERS[entity].dual:
        alt = _alt_qty(rng, value, unit, prof)
        if alt is not None:
            q = f"{q} ({alt})" if not entity_spec(entity).dimension else _pick(rng, (f"{q} / {alt}", f"{q}\n{alt}"))
    if not phrase:
        return Truth(entity, value, unit, q, number)
    template = _pick(rng, RENDERERS[entity].phrases)
    text = template.replace("{q}", q).replace("{Q}", q.upper())
    return Truth(entity, value, unit, text, number)


def _confuser(rng: np.random.Generator, truth: Truth) -> str:
    """A same-entity number that is not the answer, as packaging prints them."""
    return _pick(rng, RENDERERS[truth.entity].confusers(rng))


@dataclass(frozen=True)
class EntityRenderer:
    """How the generator prints one entity of :mod:`imagequant.core.entities` (its units' shares and value
    ranges are the entity table's)."""

    weight: float  # share of images whose main value is this entity (renormalised over those chosen)
    scenes: tuple[tuple[str, float], ...]  # the scenes that can state it as their main value, with weights
    phrases: tuple[str, ...]  # how a value is printed: {q} the quantity, {Q} in capitals
    table_names: tuple[str, ...]  # its row name in a specification table
    confusers: Callable[[np.random.Generator], tuple[str, ...]]  # same-entity numbers that are no answer
    dual: bool = False  # the value may be printed in a second unit too ("17.6 oz (500 g)")
    p_also_drawn: float = 0.0  # a length's chance to be drawn too when another length is the drawing's main value


def _dimension_confusers(rng: np.random.Generator) -> tuple[str, ...]:
    return (f"Scale 1:{_rint(rng, 5, 20)}", f"Tolerance ±{_rint(rng, 1, 5)} mm")


_DIMENSION_SCENES = (("dimension", 0.8), ("table", 0.2))

# One renderer per entity, in the entity table's order; the confusers draw their numbers in the order
# written, so a generated sample is the same for the same seed.
RENDERERS: dict[str, EntityRenderer] = {
    "width": EntityRenderer(0.17, _DIMENSION_SCENES, ("{q}", "W: {q}", "Width {q}", "W {q}"),
                            ("Width", "Item width", "W"), _dimension_confusers, dual=True, p_also_drawn=0.55),
    "depth": EntityRenderer(0.14, _DIMENSION_SCENES, ("{q}", "D: {q}", "Depth {q}", "L {q}"),
                            ("Depth", "Length", "D"), _dimension_confusers, dual=True, p_also_drawn=0.3),
    "height": EntityRenderer(0.19, _DIMENSION_SCENES, ("{q}", "H: {q}", "Height {q}", "H {q}"),
                             ("Height", "Item height", "H"), _dimension_confusers, dual=True, p_also_drawn=0.55),
    "item_weight": EntityRenderer(
        0.24, (("package", 0.7), ("table", 0.15), ("infographic", 0.15)),
        ("{q}", "{q}", "Net Wt. {q}", "NET WT {Q}", "Net Weight: {q}", "NET WEIGHT {Q}", "Weight: {q}",
         "Net wt {q}", "Poids net {q}", "Item Weight {q}", "Nettogewicht {q}"),
        ("Item weight", "Weight", "Net weight", "Product weight"),
        lambda rng: (f"Serving size {_rint(rng, 10, 60)}g", "per 100 g", f"Protein {_rint(rng, 2, 30)}g",
                     f"Sugar {_rint(rng, 1, 25)} g", f"{_rint(rng, 10, 40)} servings"),
        dual=True,
    ),
    "maximum_weight_recommendation": EntityRenderer(
        0.06, (("shelf", 0.65), ("table", 0.2), ("infographic", 0.15)),
        ("Max load {q}", "MAX LOAD: {Q}", "Load capacity {q}", "Holds up to {q}", "Max. {q}", "Capacity: {q}",
         "Weight capacity {q}", "Supports up to {q}", "MAX {Q}", "Max load: {q}"),
        ("Max load", "Load capacity", "Maximum weight", "Weight capacity"),
        lambda rng: (f"Item weight {_rint(rng, 1, 9)}.{_rint(rng, 0, 9)} kg", f"{_rint(rng, 2, 6)} shelves",
                     f"Tested {_pick(rng, (1000, 5000, 10000))} cycles"),
    ),
    "voltage": EntityRenderer(
        0.07, (("device", 0.6), ("infographic", 0.2), ("table", 0.2)),
        ("{q}", "{q} DC", "Output: {q}", "Rated voltage: {q}", "Voltage {q}", "DC {q}", "{q}~ 50Hz", "{q} AC",
         "Input {q}"),
        ("Voltage", "Rated voltage", "Input voltage", "Output voltage"),
        lambda rng: ("Input: 100-240V~ 50/60Hz", "AC 220-240V", f"{_rint(rng, 1, 5)}A",
                     f"{_pick(rng, (1200, 2000, 2600, 3000, 5000))}mAh"),
    ),
    "wattage": EntityRenderer(
        0.07, (("device", 0.45), ("infographic", 0.3), ("table", 0.25)),
        ("{q}", "{q}", "Power: {q}", "{q} Max", "Rated power {q}", "{q} LED", "Output power {q}", "POWER {Q}"),
        ("Power", "Wattage", "Rated power", "Output power"),
        lambda rng: (f"Replaces {_pick(rng, (40, 60, 75, 100))}W", f"{_pick(rng, (470, 806, 1055))} lm",
                     f"{_pick(rng, (2700, 3000, 4000, 6500))}K", "Energy class A+"),
    ),
    "item_volume": EntityRenderer(
        0.06, (("bottle", 0.8), ("table", 0.1), ("infographic", 0.1)),
        ("{q}", "{q}", "Contents: {q}", "Vol. {q}", "Capacity {q}", "{q} \u212e", "Volume: {q}"),
        ("Capacity", "Volume", "Contents"),
        lambda rng: (f"Serving size 1 cup ({_pick(rng, (200, 240, 250))} mL)", "Recycle 0.25 L",
                     f"{_rint(rng, 5, 30)} ml per use", f"Serves {_rint(rng, 2, 8)}"),
        dual=True,
    ),
}
_missing = [e for e in ENTITY_SPECS if e not in RENDERERS]
if _missing or set(RENDERERS) - set(ENTITY_SPECS):
    raise ValueError(f"the synthetic generator has no renderer for {_missing} "
                     f"or renders entities the table lacks: {sorted(set(RENDERERS) - set(ENTITY_SPECS))}")


# --------------------------------------------------------------------------------------------------
# Specs: what one image shows.
# --------------------------------------------------------------------------------------------------

def make_spec(rng: np.random.Generator, difficulty: str = "mixed", entities: Iterable[str] | None = None,
              image_size: tuple[int, int] = (640, 1000)) -> ItemSpec:
    """Draw the content of one image whose main value is one of ``entities`` (default: all eight)."""
    prof = _profile(difficulty)
    allowed = _check_entities(entities)
    weights = [RENDERERS[e].weight for e in allowed]
    main = _pick(rng, allowed, weights)
    scenes = RENDERERS[main].scenes
    kind = _pick(rng, [s for s, _ in scenes], [w for _, w in scenes])
    size = _sample_size(rng, image_size)

    def extra(entity: str, p: float) -> bool:
        return entity in allowed and entity != main and _chance(rng, p)

    truths: list[Truth] = []
    options: dict[str, Any] = {}
    category = "general"
    if kind == "package":
        category = "supplement" if _chance(rng, 0.2) else "food"
        unit = "milligram" if category == "supplement" and _chance(rng, 0.6) else None
        truths.append(_make_truth(rng, "item_weight", prof, unit=unit))
        options["shape"] = _pick(rng, ("box", "bag", "jar")) if category == "food" else "box"
        options["nutrition"] = category == "food" and _chance(rng, 0.5 * prof.p_confuser / 0.35)
    elif kind == "bottle":
        category = "liquid"
        truths.append(_make_truth(rng, "item_volume", prof))
        if extra("item_weight", 0.2):
            truths.append(_make_truth(rng, "item_weight", prof, unit="gram"))
    elif kind == "device":
        category = _pick(rng, ("device", "bulb", "battery"), (0.55, 0.25, 0.2))
        if main == "wattage" and category == "battery":
            category = "device"
        if main == "voltage" and category == "bulb":
            category = "device"
        order = [main] + [e for e in ("voltage", "wattage") if extra(e, 0.4)]
        for entity in order:
            truths.append(_make_truth(rng, entity, prof))
        options["sticker"] = category == "device" and _chance(rng, 0.6)
        options["vertical"] = category == "battery" and _chance(rng, prof.p_vertical * 0.5)
    elif kind == "shelf":
        category = "furniture"
        truths.append(_make_truth(rng, main, prof))
        if extra("item_weight", 0.2):
            truths.append(_make_truth(rng, "item_weight", prof, unit="kilogram"))
        options["shape"] = _pick(rng, ("shelf", "rack"))
    elif kind == "infographic":
        category = {"item_weight": "food", "item_volume": "liquid", "voltage": "device", "wattage": "bulb",
                    "maximum_weight_recommendation": "furniture"}.get(main, "general")
        truths.append(_make_truth(rng, main, prof))
        for entity in ("voltage", "wattage", "item_weight"):
            if main in ("voltage", "wattage") and extra(entity, 0.3 if entity != "item_weight" else 0.15):
                truths.append(_make_truth(rng, entity, prof))
    elif kind == "dimension":
        category = _pick(rng, ("general", "device", "furniture", "liquid"), (0.55, 0.2, 0.15, 0.1))
        # one length per place of the drawing (the entity table's drawing_role)
        dims, roles = [main], {entity_spec(main).drawing_role}
        for d in _dimensions():
            if extra(d, RENDERERS[d].p_also_drawn) and entity_spec(d).drawing_role not in roles:
                dims.append(d)
                roles.add(entity_spec(d).drawing_role)
        dims = [d for d in _dimensions() if d in dims]  # drawing order
        unit = _sample_unit(rng, main)
        options["letters"] = _chance(rng, 0.4)
        options["vertical_height"] = _chance(rng, prof.p_vertical)
        # a box shows the receding edge a depth is measured along
        options["shape"] = "box" if "receding" in roles else _pick(rng, ("box", "bottle", "device", "box"))
        for d in dims:
            t = _make_truth(rng, d, prof, unit=unit, phrase=False)
            if options["letters"]:
                t = Truth(d, t.value, t.unit, f"{_letter(d)}: {t.text}", t.number_text)
            truths.append(t)
    else:  # table
        category = _pick(rng, ("general", "device", "furniture"))
        ents = [main] + [e for e in allowed if extra(e, 0.25)]
        ents = ents[:4]
        dims = [d for d in _dimensions() if d in ents]
        combo = len(dims) >= 2 and _chance(rng, 0.5)
        unit = _sample_unit(rng, dims[0]) if dims else None
        values = {d: _make_truth(rng, d, prof, unit=unit, phrase=False) for d in dims}
        if combo:
            # W x D x H, or W x H x D: by each length's group_position (the entity table)
            order = _COMBO_ORDERS[0] if _chance(rng, 0.6) else _COMBO_ORDERS[1]
            shown = sorted(values, key=lambda d: order.index(entity_spec(d).group_position))
            spelled = _spelling(rng, unit or "centimetre")
            if spelled in _NO_SPACE_SPELLINGS:  # 5" x 9" x 2"
                text = " x ".join(values[d].number_text + spelled for d in shown)
            else:  # 30 x 20 x 10 cm
                text = " x ".join(values[d].number_text for d in shown) + f" {spelled}"
            text = f"({' x '.join(_letter(d) for d in shown)}) {text}"
            options["combo"] = text
            for d in shown:
                v = values[d]
                truths.append(Truth(v.entity, v.value, v.unit, text, v.number_text))
        for e in ents:
            if e in values and combo:
                continue
            t = values.get(e) or _make_truth(rng, e, prof, phrase=False)
            truths.append(t)
    n_lines = _rint(rng, *prof.n_lines)
    lines = [_distractor(rng) for _ in range(n_lines)]
    confusers = [_confuser(rng, truths[0])] if _chance(rng, prof.p_confuser) and kind != "dimension" else []
    title = _pick(rng, _TITLES[category])
    return ItemSpec(kind=kind, truths=truths, difficulty=difficulty, size=size, category=category,
                    brand=_brand(rng), title=title, lines=lines, confusers=confusers, options=options)


# The orders a table's shared "a x b x c" text prints the lengths in, by their group positions.
_COMBO_ORDERS = (("first", "middle", "last"), ("first", "last", "middle"))


def _dimensions() -> list[str]:
    """The lengths (the entity table's dimension entities), in drawing order, read from the table now."""
    return [spec.name for spec in dimension_specs()]


def _letter(entity: str) -> str:
    """The letter a length is printed with ("W: 30 cm", "(W x D x H)"): its first in the entity table."""
    letters = entity_spec(entity).letters
    if not letters:
        raise ValueError(f"entity {entity!r} has no letters to print it with")
    return letters[0].upper()


def _sample_size(rng: np.random.Generator, image_size: tuple[int, int]) -> tuple[int, int]:
    lo, hi = image_size
    side = _rint(rng, lo, hi)
    if _chance(rng, 0.8):  # catalog images are mostly square
        return side, side
    other = int(side * _uniform(rng, 0.72, 0.95))
    return (side, other) if _chance(rng, 0.5) else (other, side)


def _profile(difficulty: str) -> _Profile:
    if difficulty not in _PROFILES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, not {difficulty!r}")
    return _PROFILES[difficulty]


def _check_entities(entities: Iterable[str] | None) -> list[str]:
    if entities is None:
        return list(ENTITIES)
    chosen = list(dict.fromkeys([entities] if isinstance(entities, str) else entities))
    unknown = [e for e in chosen if e not in ENTITY_UNITS]
    if unknown or not chosen:
        raise ValueError(f"unknown entities {unknown}; choose from {', '.join(ENTITIES)}" if unknown
                         else "entities must not be empty")
    return [e for e in ENTITIES if e in chosen]


# --------------------------------------------------------------------------------------------------
# Fonts, colours and text drawing.
# --------------------------------------------------------------------------------------------------

_FONT_FILES = {
    "sans": "DejaVuSans.ttf", "sans_bold": "DejaVuSans-Bold.ttf", "sans_oblique": "DejaVuSans-Oblique.ttf",
    "sans_bold_oblique": "DejaVuSans-BoldOblique.ttf", "mono": "DejaVuSansMono.ttf",
    "mono_bold": "DejaVuSansMono-Bold.ttf", "serif": "DejaVuSerif.ttf", "serif_bold": "DejaVuSerif-Bold.ttf",
    "serif_italic": "DejaVuSerif-Italic.ttf", "stix": "STIXGeneral.ttf", "stix_bold": "STIXGeneralBol.ttf",
    "stix_italic": "STIXGeneralItalic.ttf", "cm_sans": "cmss10.ttf", "cm_roman": "cmr10.ttf",
    "cm_bold": "cmb10.ttf", "cm_mono": "cmtt10.ttf",
}
# The Computer Modern files map only these characters to their usual glyphs.
_CM_SAFE = frozenset(string.ascii_letters + string.digits + " .,:;()%/+-'\"!?&=#$*@[]\n")


@functools.cache
def font_dir() -> Path:
    """matplotlib's bundled TrueType fonts (DejaVu, STIX, Computer Modern): never downloaded."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=1024)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / _FONT_FILES[name]), max(6, size))


def _font_for(name: str, text: str) -> str:
    """The font to draw ``text`` with: Computer Modern lacks µ, ~, < and friends, so fall back to DejaVu."""
    if name.startswith("cm_") and not set(text) <= _CM_SAFE:
        return "sans_bold" if name == "cm_bold" else "sans"
    return name


def _lum(color: tuple[int, int, int]) -> float:
    r, g, b = color
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


def _color(rng: np.random.Generator, lum_lo: float, lum_hi: float, sat: float = 0.6) -> tuple[int, int, int]:
    """A random colour whose luminance lies in [lum_lo, lum_hi]."""
    target = _uniform(rng, lum_lo, lum_hi)
    hue = rng.random(3)
    base = np.array([0.5, 0.5, 0.5]) + sat * (hue - hue.mean())
    base = np.clip(base, 0.0, 1.0)
    cur = _lum(tuple(int(c * 255) for c in base)) or 1e-3  # type: ignore[arg-type]
    # Scale toward black or white until the luminance matches the target.
    if target <= cur:
        rgb = base * (target / cur)
    else:
        k = (target - cur) / max(1e-3, 1 - cur)
        rgb = base + (1 - base) * k
    return tuple(int(round(c * 255)) for c in np.clip(rgb, 0, 1))  # type: ignore[return-value]


def _text_color(rng: np.random.Generator, ground: tuple[int, int, int], prof: _Profile) -> tuple[int, int, int]:
    """A text colour that contrasts with ``ground`` as much as the profile asks (sometimes only ~0.3)."""
    low = _chance(rng, prof.p_low_contrast)
    need = 0.3 if low else prof.min_contrast
    g = _lum(ground)
    if g >= 0.5 and g - need >= 0.0 or g + need > 1.0:  # dark text
        hi = max(0.0, g - need)
        lo = max(0.0, hi - 0.06) if low else 0.0
        return _color(rng, lo, min(hi, 0.3) if not low else hi, sat=_uniform(rng, 0.0, 0.7))
    lo = min(1.0, g + need)
    return _color(rng, lo if low else max(lo, 0.85), min(1.0, lo + 0.06) if low else 1.0, sat=0.2)


def _text_mask(text: str, font: ImageFont.FreeTypeFont, squeeze: float = 1.0, angle: float = 0.0,
               align: str = "center") -> Image.Image:
    """``text`` drawn white on black in its own tight layer, optionally condensed and rotated."""
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    box = probe.multiline_textbbox((0, 0), text, font=font, align=align)
    left, top, right, bottom = math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])
    pad = 2
    mask = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(mask).multiline_text((pad - left, pad - top), text, font=font, fill=255, align=align)
    if squeeze != 1.0:
        mask = mask.resize((max(1, int(mask.width * squeeze)), mask.height), Image.Resampling.BILINEAR)
    if angle:
        mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    return mask


def _paste_text(img: Image.Image, mask: Image.Image, center: tuple[float, float],
                color: tuple[int, int, int]) -> tuple[int, int, int, int]:
    x = int(round(center[0] - mask.width / 2))
    y = int(round(center[1] - mask.height / 2))
    img.paste(color, (x, y, x + mask.width, y + mask.height), mask)
    return x, y, x + mask.width, y + mask.height


@dataclass
class _Line:
    text: str
    em: float  # font size, fraction of the image's short side
    font: str
    color: tuple[int, int, int] = (0, 0, 0)
    squeeze: float = 1.0


def _fit_mask(text: str, font: str, size: int, max_w: float, squeeze: float = 1.0, angle: float = 0.0,
              align: str = "center") -> Image.Image:
    """``text`` as a mask at ``size`` px, redrawn smaller when it is wider than ``max_w``."""
    name = _font_for(font, text)
    size = max(6, size)
    mask = _text_mask(text, _font(name, size), squeeze, angle, align)
    if mask.width > max_w:
        size = max(6, int(size * max_w / mask.width))
        mask = _text_mask(text, _font(name, size), squeeze, angle, align)
    return mask


def _layout(img: Image.Image, rect: tuple[float, float, float, float], lines: list[_Line],
            rng: np.random.Generator, align: str = "center", side: int | None = None) -> None:
    """Stack ``lines`` top to bottom inside ``rect``, shrinking any that do not fit.

    Line sizes are fractions of ``side`` (default: the image's short side).
    """
    x0, y0, x1, y1 = rect
    width, height = x1 - x0, y1 - y0
    if not lines or width < 8 or height < 8:
        return
    side = side or min(img.size)

    def build(scale: float) -> tuple[list[Image.Image], list[int], float]:
        masks = [_fit_mask(ln.text, ln.font, int(ln.em * side * scale), width * 0.94, ln.squeeze, align=align)
                 for ln in lines]
        gaps = [max(2, int(m.height * 0.3 * min(1.0, scale))) for m in masks]
        return masks, gaps, sum(m.height for m in masks) + sum(gaps[:-1])

    masks, gaps, total = build(1.0)
    scale = 1.0
    for _ in range(3):  # too tall: shrink every line alike (a few rounds; widths limit some lines already)
        if total <= height:
            break
        scale *= height / total * 0.97
        masks, gaps, total = build(scale)
    y = y0 + max(0.0, height - total) * _uniform(rng, 0.3, 0.7)
    for line, mask, gap in zip(lines, masks, gaps, strict=True):
        cx = x0 + width * 0.03 + mask.width / 2 if align == "left" else x0 + width / 2
        _paste_text(img, mask, (cx, y + mask.height / 2), line.color)
        y += mask.height + gap


# --------------------------------------------------------------------------------------------------
# Backgrounds and product shapes.
# --------------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, size: tuple[int, int], prof: _Profile) -> Image.Image:
    w, h = size
    style = _pick(rng, ("white", "flat", "gradient", "noise"), prof.background)
    dark = _chance(rng, prof.p_dark_ground * 0.5) and style != "white"
    lum = (0.05, 0.3) if dark else (0.82, 0.98)
    if style == "white":
        return Image.new("RGB", size, (255, 255, 255))
    c1 = np.array(_color(rng, *lum, sat=0.3), dtype=np.float32)
    if style == "flat":
        return Image.new("RGB", size, tuple(int(v) for v in c1))
    if style == "gradient":
        c2 = np.array(_color(rng, *lum, sat=0.3), dtype=np.float32)
        t = np.linspace(0.0, 1.0, h if _chance(rng, 0.6) else w, dtype=np.float32)
        row = c1[None, :] * (1 - t[:, None]) + c2[None, :] * t[:, None]
        arr = np.broadcast_to(row[:, None, :], (h, w, 3)) if len(t) == h else np.broadcast_to(row[None], (h, w, 3))
        return Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8))
    # Noise: a coarse random field upsampled, so it is cheap and looks like texture, not static.
    coarse = rng.normal(0.0, 8.0, size=(max(2, h // 12), max(2, w // 12))).astype(np.float32)
    field_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BILINEAR)
    delta = np.asarray(field_img, dtype=np.float32)[..., None] - 128.0
    arr = np.clip(c1[None, None, :] + delta, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _shade(color: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    """Lighter (k > 0) or darker (k < 0) version of a colour."""
    if k >= 0:
        return tuple(int(c + (255 - c) * k) for c in color)  # type: ignore[return-value]
    return tuple(int(c * (1 + k)) for c in color)  # type: ignore[return-value]


Rect = tuple[float, float, float, float]


def _draw_box(draw: ImageDraw.ImageDraw, rect: Rect, body: tuple[int, int, int],
              depth: float = 0.14) -> tuple[Rect, Rect]:
    """A 3D box whose receding side takes ``depth`` of the width; returns (front face, panel on it)."""
    x0, y0, x1, y1 = rect
    dx, dy = (x1 - x0) * depth, (y1 - y0) * depth * 0.7
    fx0, fy0, fx1, fy1 = x0, y0 + dy, x1 - dx, y1
    outline = _shade(body, -0.45)
    draw.polygon([(fx0, fy0), (fx0 + dx, y0), (x1, y0), (fx1, fy0)], fill=_shade(body, 0.3), outline=outline)
    draw.polygon([(fx1, fy0), (x1, y0), (x1, fy1 - dy), (fx1, fy1)], fill=_shade(body, -0.25), outline=outline)
    draw.rectangle((fx0, fy0, fx1, fy1), fill=body, outline=outline, width=2)
    front = (fx0, fy0, fx1, fy1)
    return front, _inset(front, 0.07, 0.08)


def _draw_bag(draw: ImageDraw.ImageDraw, rect: Rect, body: tuple[int, int, int]) -> Rect:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    outline = _shade(body, -0.45)
    draw.rounded_rectangle((x0, y0 + h * 0.04, x1, y1), radius=int(w * 0.08), fill=body, outline=outline, width=2)
    band = (x0, y0, x1, y0 + h * 0.1)
    draw.rectangle(band, fill=_shade(body, -0.2), outline=outline)
    teeth = 24
    pts = [(x0 + w * i / teeth, y0 + (h * 0.02 if i % 2 else 0)) for i in range(teeth + 1)]
    draw.line(pts, fill=_shade(body, 0.4), width=2)
    return _inset((x0, y0 + h * 0.1, x1, y1), 0.08, 0.06)


def _draw_jar(draw: ImageDraw.ImageDraw, rect: Rect, body: tuple[int, int, int]) -> Rect:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    lid = _shade(body, -0.5)
    draw.rounded_rectangle((x0 + w * 0.05, y0, x1 - w * 0.05, y0 + h * 0.14), radius=int(w * 0.03), fill=lid)
    draw.rounded_rectangle((x0, y0 + h * 0.12, x1, y1), radius=int(w * 0.1), fill=body,
                           outline=_shade(body, -0.4), width=2)
    return _inset((x0, y0 + h * 0.12, x1, y1), 0.06, 0.12)


def _draw_bottle(draw: ImageDraw.ImageDraw, rect: Rect, body: tuple[int, int, int]) -> Rect:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    neck_w = w * 0.32
    cap = _shade(body, -0.55)
    draw.rectangle((cx - neck_w / 2 - w * 0.03, y0, cx + neck_w / 2 + w * 0.03, y0 + h * 0.09), fill=cap)
    draw.rectangle((cx - neck_w / 2, y0 + h * 0.09, cx + neck_w / 2, y0 + h * 0.2), fill=_shade(body, 0.2))
    draw.polygon([(cx - neck_w / 2, y0 + h * 0.2), (cx + neck_w / 2, y0 + h * 0.2), (x1, y0 + h * 0.32),
                  (x0, y0 + h * 0.32)], fill=body)
    draw.rounded_rectangle((x0, y0 + h * 0.3, x1, y1), radius=int(w * 0.1), fill=body,
                           outline=_shade(body, -0.4), width=2)
    return (x0 + w * 0.03, y0 + h * 0.42, x1 - w * 0.03, y1 - h * 0.08)


def _draw_device(draw: ImageDraw.ImageDraw, rect: Rect, body: tuple[int, int, int],
                 rng: np.random.Generator) -> Rect:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    draw.rounded_rectangle(rect, radius=int(min(w, h) * 0.08), fill=body, outline=_shade(body, -0.5), width=3)
    accent = _shade(body, 0.35)
    for i in range(_rint(rng, 1, 3)):  # buttons / vents
        r = min(w, h) * 0.035
        cx = x0 + w * (0.15 + 0.1 * i)
        draw.ellipse((cx - r, y0 + h * 0.1 - r, cx + r, y0 + h * 0.1 + r), fill=accent)
    for i in range(4):
        yy = y0 + h * (0.08 + 0.03 * i)
        draw.line((x1 - w * 0.35, yy, x1 - w * 0.1, yy), fill=_shade(body, -0.35), width=2)
    return _inset((x0, y0 + h * 0.22, x1, y1), 0.07, 0.06)


def _draw_bulb(draw: ImageDraw.ImageDraw, rect: Rect, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    r = min(w, h * 0.62) / 2
    cx, cy = (x0 + x1) / 2, y0 + r
    glass = _color(rng, 0.88, 0.97, sat=0.25)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=glass, outline=_shade(glass, -0.3), width=2)
    bw = r * 0.9
    draw.polygon([(cx - r * 0.7, cy + r * 0.7), (cx + r * 0.7, cy + r * 0.7), (cx + bw / 2, cy + r * 1.1),
                  (cx - bw / 2, cy + r * 1.1)], fill=glass)
    metal = (150, 150, 155)
    for i in range(4):
        yy = cy + r * (1.1 + 0.14 * i)
        draw.rounded_rectangle((cx - bw / 2, yy, cx + bw / 2, yy + r * 0.12), radius=3, fill=_shade(metal, 0.1 * i))
    draw.ellipse((cx - bw / 4, cy + r * 1.66, cx + bw / 4, cy + r * 1.8), fill=(60, 60, 60))


def _draw_battery(draw: ImageDraw.ImageDraw, rect: Rect, body: tuple[int, int, int], vertical: bool) -> Rect:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    if vertical:
        bw = w * 0.45
        cx = (x0 + x1) / 2
        draw.rectangle((cx - bw * 0.18, y0, cx + bw * 0.18, y0 + h * 0.05), fill=(170, 170, 170))
        draw.rounded_rectangle((cx - bw / 2, y0 + h * 0.05, cx + bw / 2, y1), radius=int(bw * 0.15), fill=body)
        draw.rectangle((cx - bw * 0.35, y0 + h * 0.08, cx - bw * 0.25, y1 - h * 0.05), fill=_shade(body, 0.3))
        return (cx - bw * 0.4, y0 + h * 0.1, cx + bw * 0.45, y1 - h * 0.05)
    bh = h * 0.45
    cy = (y0 + y1) / 2
    draw.rectangle((x1 - w * 0.05, cy - bh * 0.18, x1, cy + bh * 0.18), fill=(170, 170, 170))
    draw.rounded_rectangle((x0, cy - bh / 2, x1 - w * 0.05, cy + bh / 2), radius=int(bh * 0.15), fill=body)
    draw.rectangle((x0 + w * 0.02, cy - bh * 0.38, x1 - w * 0.08, cy - bh * 0.3), fill=_shade(body, 0.3))
    return (x0 + w * 0.04, cy - bh * 0.28, x1 - w * 0.1, cy + bh * 0.45)


def _draw_shelf(draw: ImageDraw.ImageDraw, rect: Rect, body: tuple[int, int, int], rack: bool) -> None:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    edge = _shade(body, -0.4)
    if rack:
        for x in (x0, x1 - w * 0.05):
            draw.rectangle((x, y0, x + w * 0.05, y1), fill=edge)
        for i in range(4):
            yy = y0 + h * (0.1 + 0.27 * i)
            draw.rectangle((x0, yy, x1, yy + h * 0.05), fill=body, outline=edge)
        return
    draw.rectangle((x0, y0 + h * 0.3, x1, y0 + h * 0.42), fill=body, outline=edge, width=2)
    for x in (x0 + w * 0.15, x1 - w * 0.2):
        draw.polygon([(x, y0 + h * 0.42), (x + w * 0.05, y0 + h * 0.42), (x + w * 0.05, y0 + h * 0.8)],
                     fill=(90, 90, 95))
    for i in range(3):  # things standing on the shelf
        bx = x0 + w * (0.1 + 0.28 * i)
        draw.rectangle((bx, y0 + h * (0.05 + 0.05 * i), bx + w * 0.18, y0 + h * 0.3),
                       fill=_shade(body, 0.2 + 0.15 * i), outline=edge)


def _inset(rect: Rect, fx: float, fy: float) -> Rect:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    return x0 + w * fx, y0 + h * fy, x1 - w * fx, y1 - h * fy


def _barcode(img: Image.Image, rect: Rect, rng: np.random.Generator, font: str) -> None:
    """Bars with their digits under them: a long number that is never the answer."""
    x0, y0, x1, y1 = rect
    if x1 - x0 < 30 or y1 - y0 < 16:  # no room for a readable barcode
        return
    draw = ImageDraw.Draw(img)
    draw.rectangle(rect, fill=(255, 255, 255))
    digits = "".join(str(_rint(rng, 0, 9)) for _ in range(13))
    # Whole pixels: with float edges a 1-px bar's right edge can round below its left edge.
    x, x_end = int(x0 + (x1 - x0) * 0.06), int(x1 - (x1 - x0) * 0.06)
    bars_top, bars_bottom = int(y0 + (y1 - y0) * 0.05), int(y0 + (y1 - y0) * 0.7)
    while x < x_end:
        bw = _rint(rng, 1, 3)
        if _chance(rng, 0.55):
            draw.rectangle((x, bars_top, x + bw - 1, bars_bottom), fill=(0, 0, 0))
        x += bw
    size = max(6, int((y1 - y0) * 0.22))
    text = f"{digits[0]} {digits[1:7]} {digits[7:]}"
    mask = _text_mask(text, _font(_font_for(font, text), size))
    if mask.width > (x1 - x0):
        mask = mask.resize((int(x1 - x0), mask.height))
    _paste_text(img, mask, ((x0 + x1) / 2, (bars_bottom + y1) / 2), (0, 0, 0))


# --------------------------------------------------------------------------------------------------
# Rendering.
# --------------------------------------------------------------------------------------------------


class _Ctx:
    """Per-image drawing choices shared by the scene painters."""

    def __init__(self, spec: ItemSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        self.prof = _profile(spec.difficulty)
        self.font = _pick(rng, self.prof.fonts)
        # A second font for headings; packaging mixes a display face with a text face.
        self.head_font = _pick(rng, self.prof.fonts)
        self.squeeze = _uniform(rng, 0.7, 0.9) if _chance(rng, self.prof.p_squeeze) else 1.0

    def value_em(self) -> float:
        mix = self.prof.value_em
        _, lo, hi = _pick(self.rng, mix, [m[0] for m in mix])
        return _uniform(self.rng, lo, hi)

    def em(self, which: tuple[float, float]) -> float:
        return _uniform(self.rng, *which)

    def ground(self) -> tuple[int, int, int]:
        """A label panel colour: light in easy mode, sometimes dark or saturated otherwise."""
        if _chance(self.rng, self.prof.p_dark_ground):
            return _color(self.rng, 0.08, 0.35, sat=0.7)
        if _chance(self.rng, 0.45):
            return (255, 255, 255) if _chance(self.rng, 0.5) else (250, 247, 238)
        return _color(self.rng, 0.82, 0.97, sat=0.4)

    def value_lines(self, color: tuple[int, int, int]) -> list[_Line]:
        """One line per distinct printed truth phrase (phrases shared by a combo print once)."""
        seen: list[str] = []
        for t in self.spec.truths:
            if t.printed_text not in seen:
                seen.append(t.printed_text)
        return [_Line(text, self.value_em(), self.font if _chance(self.rng, 0.5) else self.head_font,
                      color, self.squeeze) for text in seen]

    def text_lines(self, color: tuple[int, int, int], brand: bool = True) -> tuple[list[_Line], list[_Line]]:
        """(heading lines, small lines): brand/title and distractors/confusers."""
        head: list[_Line] = []
        if brand and self.spec.brand:
            head.append(_Line(self.spec.brand, self.em(self.prof.other_em) * 1.1, self.head_font, color))
        if self.spec.title:
            head.append(_Line(self.spec.title, self.em(self.prof.other_em) * 0.8, self.font, color, self.squeeze))
        small = [_Line(t, self.em(self.prof.small_em), self.font, color, self.squeeze)
                 for t in [*self.spec.lines, *self.spec.confusers]]
        return head, small


def render_item(spec: ItemSpec, rng: np.random.Generator) -> Image.Image:
    """Draw ``spec`` as an RGB image (the size in ``spec.size``); all choices come from ``rng``."""
    ctx = _Ctx(spec, rng)
    img = _background(rng, spec.size, ctx.prof)
    painter = {
        "package": _paint_package, "bottle": _paint_package, "device": _paint_device,
        "infographic": _paint_infographic, "shelf": _paint_infographic, "dimension": _paint_dimension,
        "table": _paint_table,
    }.get(spec.kind)
    if painter is None:
        raise ValueError(f"unknown scene kind {spec.kind!r}; choose from {', '.join(SCENE_KINDS)}")
    painter(img, ctx)
    return _degrade(img, ctx)


def _bg_color(img: Image.Image) -> tuple[int, int, int]:
    return img.getpixel((2, 2))  # type: ignore[return-value]


def _paint_package(img: Image.Image, ctx: _Ctx) -> None:
    """A box, bag, jar or bottle with a label panel carrying brand, title, value and small print."""
    rng, spec = ctx.rng, ctx.spec
    w, h = img.size
    draw = ImageDraw.Draw(img)
    shape = "bottle" if spec.kind == "bottle" else spec.options.get("shape", "box")
    # Easy mode keeps the product wide so large value text fits on it.
    wide = (0.62, 0.82) if spec.difficulty == "easy" else (0.45, 0.8)
    pw = w * _uniform(rng, *wide) * (0.8 if shape == "bottle" and spec.difficulty != "easy" else 1.0)
    ph = h * _uniform(rng, 0.72, 0.9)
    x0 = (w - pw) * _uniform(rng, 0.3, 0.7)
    y0 = (h - ph) * _uniform(rng, 0.3, 0.7)
    rect = (x0, y0, x0 + pw, y0 + ph)
    body = _color(rng, 0.2, 0.85, sat=0.8)
    if shape == "box":
        _, panel = _draw_box(draw, rect, body)
    elif shape == "bag":
        panel = _draw_bag(draw, rect, body)
    elif shape == "jar":
        panel = _draw_jar(draw, rect, body)
    else:
        panel = _draw_bottle(draw, rect, body)
    ground = ctx.ground()
    draw.rounded_rectangle(panel, radius=int((panel[2] - panel[0]) * 0.04), fill=ground)
    fg = _text_color(rng, ground, ctx.prof)
    head, small = ctx.text_lines(fg)
    values = ctx.value_lines(fg)
    lines = [*head, *values, *small] if _chance(rng, 0.6) else [*head, *small[:1], *values, *small[1:]]
    text_rect = panel
    if spec.options.get("nutrition") and panel[3] - panel[1] > h * 0.3:
        # Small nutrition block at the panel's foot: more weights in grams that are not the net weight.
        px0, py0, px1, py1 = panel
        split = py1 - (py1 - py0) * 0.28
        text_rect = (px0, py0, px1, split)
        box = (px0 + (px1 - px0) * 0.05, split, px1 - (px1 - px0) * 0.4, py1 - (py1 - py0) * 0.02)
        draw.rectangle(box, outline=fg, width=2)
        rows = ["Nutrition Facts", f"Serving size {_rint(rng, 15, 60)}g", f"Calories {_rint(rng, 80, 400)}",
                f"Fat {_rint(rng, 1, 20)}g  Protein {_rint(rng, 1, 25)}g"]
        _layout(img, _inset(box, 0.03, 0.05), [_Line(r, 0.03, ctx.font, fg) for r in rows], rng, align="left")
        if _chance(rng, 0.6):
            _barcode(img, (box[2] + (px1 - box[2]) * 0.1, split + (py1 - split) * 0.2, px1 - (px1 - px0) * 0.03,
                           py1 - (py1 - py0) * 0.03), rng, ctx.font)
    _layout(img, text_rect, lines, rng)


def _paint_device(img: Image.Image, ctx: _Ctx) -> None:
    """A device with a rating sticker (or print on its body), a bulb, or a battery."""
    rng, spec = ctx.rng, ctx.spec
    w, h = img.size
    draw = ImageDraw.Draw(img)
    cat = spec.category
    body = _color(rng, 0.08, 0.5, sat=0.3) if cat != "battery" else _color(rng, 0.25, 0.7, sat=0.9)
    if cat == "bulb":
        # Bulb on one side, the specs on the background beside it.
        left = _chance(rng, 0.5)
        brect = (w * 0.05, h * 0.15, w * 0.45, h * 0.85) if left else (w * 0.55, h * 0.15, w * 0.95, h * 0.85)
        _draw_bulb(draw, brect, rng)
        trect = (w * 0.48, h * 0.08, w * 0.97, h * 0.92) if left else (w * 0.03, h * 0.08, w * 0.52, h * 0.92)
        fg = _text_color(rng, _bg_color(img), ctx.prof)
        head, small = ctx.text_lines(fg)
        _layout(img, trect, [*head, *ctx.value_lines(fg), *small], rng)
        return
    if cat == "battery":
        vertical = bool(spec.options.get("vertical"))
        rect = (w * 0.25, h * 0.06, w * 0.75, h * 0.94) if vertical else (w * 0.05, h * 0.2, w * 0.95, h * 0.8)
        if spec.difficulty == "easy" and not vertical:
            rect = (w * 0.03, h * 0.12, w * 0.97, h * 0.88)
        panel = _draw_battery(draw, rect, body, vertical)
        fg = _text_color(rng, body, ctx.prof)
        lines = [*ctx.value_lines(fg), *ctx.text_lines(fg, brand=True)[0][:1]]
        if vertical:
            # Text runs along the cell: lay it out on a sideways layer, then turn the layer 90 degrees.
            pw, ph = int(panel[2] - panel[0]), int(panel[3] - panel[1])
            layer = Image.new("RGB", (ph, pw), (0, 0, 0))
            white = [_Line(ln.text, ln.em, ln.font, (255, 255, 255), ln.squeeze) for ln in lines]
            _layout(layer, (0, 0, ph, pw), white, rng, side=min(w, h))
            img.paste(fg, (int(panel[0]), int(panel[1]), int(panel[0]) + pw, int(panel[1]) + ph),
                      layer.convert("L").rotate(90, expand=True))
        else:
            _layout(img, panel, lines, rng)
        return
    pw, ph = w * _uniform(rng, 0.65, 0.9), h * _uniform(rng, 0.6, 0.85)
    x0, y0 = (w - pw) * _uniform(rng, 0.3, 0.7), (h - ph) * _uniform(rng, 0.3, 0.7)
    panel = _draw_device(draw, (x0, y0, x0 + pw, y0 + ph), body, rng)
    if spec.options.get("sticker", True) or spec.difficulty == "easy":
        ground = (255, 255, 255) if _chance(rng, 0.6) else (215, 215, 218)
        draw.rectangle(panel, fill=ground, outline=(40, 40, 40), width=2)
    else:
        ground = body  # printed (or embossed) on the body itself
    fg = _text_color(rng, ground, ctx.prof)
    head, small = ctx.text_lines(fg)
    small.append(_Line("CE  RoHS", ctx.em(ctx.prof.small_em), "sans_bold", fg))
    _layout(img, panel, [*head[:1], *ctx.value_lines(fg), *small], rng, align="left" if _chance(rng, 0.5) else "center")


def _paint_infographic(img: Image.Image, ctx: _Ctx) -> None:
    """A product drawing on one side, call-outs with the values (and features) on the other."""
    rng, spec = ctx.rng, ctx.spec
    w, h = img.size
    draw = ImageDraw.Draw(img)
    left = _chance(rng, 0.5)
    share = _uniform(rng, 0.4, 0.55)
    prod = (w * 0.04, h * 0.12, w * share, h * 0.88) if left else (w * (1 - share), h * 0.12, w * 0.96, h * 0.88)
    text = (w * (share + 0.02), h * 0.05, w * 0.98, h * 0.95) if left else (w * 0.02, h * 0.05, w * (0.98 - share), h * 0.95)
    body = _color(rng, 0.2, 0.8, sat=0.7)
    shape = spec.options.get("shape") or {"food": "bag", "liquid": "bottle", "device": "device",
                                          "bulb": "bulb", "furniture": "shelf"}.get(spec.category, "box")
    if shape in ("shelf", "rack"):
        _draw_shelf(draw, prod, body, rack=shape == "rack")
    elif shape == "bulb":
        _draw_bulb(draw, prod, rng)
    elif shape == "bottle":
        _draw_bottle(draw, _inset(prod, 0.15, 0.0), body)
    elif shape == "device":
        _draw_device(draw, _inset(prod, 0.0, 0.2), body, rng)
    elif shape == "bag":
        _draw_bag(draw, _inset(prod, 0.05, 0.05), body)
    else:
        _draw_box(draw, _inset(prod, 0.05, 0.15), body)
    bg = _bg_color(img)
    accent = _color(rng, 0.2, 0.5, sat=0.9)
    fg = _text_color(rng, bg, ctx.prof)
    head, small = ctx.text_lines(fg)
    values = ctx.value_lines(fg)
    if _chance(rng, 0.5) and spec.difficulty != "easy":
        # A badge: the value in light text on a coloured disc or tag.
        badge_fg = _text_color(rng, accent, ctx.prof)
        vx0, vy0, vx1, vy1 = text
        cy = vy0 + (vy1 - vy0) * _uniform(rng, 0.35, 0.6)
        half = (vy1 - vy0) * 0.2
        badge = (vx0 + (vx1 - vx0) * 0.05, cy - half, vx1 - (vx1 - vx0) * 0.05, cy + half)
        draw.rounded_rectangle(badge, radius=int(half * _uniform(rng, 0.2, 1.0)), fill=accent)
        for line in values:
            line.color = badge_fg
        _layout(img, _inset(badge, 0.06, 0.1), values, rng)
        _layout(img, (vx0, vy0, vx1, badge[1]), head, rng)
        _layout(img, (vx0, badge[3], vx1, vy1), small, rng)
        return
    _layout(img, text, [*head[:1], *values, *small], rng, align="left" if _chance(rng, 0.4) else "center")


def _arrow(draw: ImageDraw.ImageDraw, p: tuple[float, float], q: tuple[float, float],
           color: tuple[int, int, int], width: int) -> None:
    """A double-headed measuring arrow from p to q, with end ticks."""
    draw.line((p, q), fill=color, width=width)
    ang = math.atan2(q[1] - p[1], q[0] - p[0])
    size = max(6.0, width * 4.0)
    for (x, y), a in ((p, ang), (q, ang + math.pi)):
        left = (x + size * math.cos(a + 0.4), y + size * math.sin(a + 0.4))
        right = (x + size * math.cos(a - 0.4), y + size * math.sin(a - 0.4))
        draw.polygon([(x, y), left, right], fill=color)
        tick = size * 0.9
        nx, ny = -math.sin(a), math.cos(a)
        draw.line(((x - nx * tick, y - ny * tick), (x + nx * tick, y + ny * tick)), fill=color, width=max(1, width // 2))


def _paint_dimension(img: Image.Image, ctx: _Ctx) -> None:
    """A product outline with measuring arrows: width below, height beside it (its label often rotated
    90 degrees, on the arrow), depth along the box's receding edge."""
    rng, spec = ctx.rng, ctx.spec
    w, h = img.size
    side = min(w, h)
    draw = ImageDraw.Draw(img)
    # each length's label goes where its drawing_role (the entity table) puts it
    by_role = {entity_spec(t.entity).drawing_role: t for t in spec.truths}
    bg = _bg_color(img)
    ink = _text_color(rng, bg, ctx.prof)
    line_w = max(2, int(side * _uniform(rng, 0.003, 0.006)))
    shape = spec.options.get("shape", "box")
    body = _color(rng, 0.35, 0.9, sat=0.6)
    has_depth = "receding" in by_role
    # With depth, the height arrow moves to the left so the right side is free for the depth arrow.
    if has_depth:
        rect = (w * _uniform(rng, 0.28, 0.33), h * 0.2, w * _uniform(rng, 0.76, 0.8), h * _uniform(rng, 0.66, 0.72))
    else:
        rect = (w * _uniform(rng, 0.06, 0.12), h * 0.2, w * _uniform(rng, 0.6, 0.68), h * _uniform(rng, 0.68, 0.76))
    if shape == "box":
        front, _ = _draw_box(draw, rect, body, depth=_uniform(rng, 0.25, 0.35) if has_depth else 0.14)
    elif shape == "bottle":
        rect = _inset(rect, 0.2, 0.0)
        _draw_bottle(draw, rect, body)
        front = rect
    else:
        front = rect
        _draw_device(draw, rect, body, rng)
    fx0, fy0, fx1, fy1 = front
    gap = side * 0.06

    def mask_for(truth: Truth, max_w: float, angle: float = 0.0) -> Image.Image:
        em = max(ctx.value_em() * 0.85, 0.02)
        if angle:  # a rotated label must fit along its arrow: fit its unrotated width, then turn it
            return _fit_mask(truth.printed_text, ctx.font, int(em * side), max_w, ctx.squeeze).rotate(
                angle, resample=Image.Resampling.BICUBIC, expand=True)
        return _fit_mask(truth.printed_text, ctx.font, int(em * side), max_w, ctx.squeeze)

    def on_line(mask: Image.Image, center: tuple[float, float]) -> None:
        """Paste a label over its dimension line, clearing the line behind it first."""
        box = (center[0] - mask.width / 2 - 4, center[1] - mask.height / 2 - 2,
               center[0] + mask.width / 2 + 4, center[1] + mask.height / 2 + 2)
        draw.rectangle(box, fill=bg)
        _paste_text(img, mask, center, ink)

    if "below" in by_role:
        y = fy1 + gap
        _arrow(draw, (fx0, y), (fx1, y), ink, line_w)
        mask = mask_for(by_role["below"], (fx1 - fx0) * 0.9 if has_depth else max(fx1 - fx0, w * 0.3))
        if has_depth or _chance(rng, 0.5):
            on_line(mask, ((fx0 + fx1) / 2, y))
        else:
            _paste_text(img, mask, ((fx0 + fx1) / 2, min(y + line_w + mask.height * 0.6, h - mask.height / 2)), ink)
    if "beside" in by_role:
        t = by_role["beside"]
        vertical = bool(spec.options.get("vertical_height"))
        if has_depth:
            top, x = fy0, fx0 - gap
            free = x - gap * 0.3 - 4  # room left of the arrow
        else:
            top, x = (rect[1] if shape == "box" else fy0), rect[2] + gap
            free = w - x - gap * 0.3 - 4
        _arrow(draw, (x, top), (x, fy1), ink, line_w)
        mid = (top + fy1) / 2
        if vertical:
            on_line(mask_for(t, (fy1 - top) * 0.8, angle=90.0), (x, mid))
        else:
            mask = mask_for(t, free)
            offset = gap * 0.3 + mask.width / 2
            _paste_text(img, mask, (x - offset if has_depth else x + offset, mid), ink)
    if has_depth:
        dx, dy = rect[2] - fx1, fy0 - rect[1]
        p = (fx1 + gap * 0.5, fy1 + gap * 0.5)
        q = (p[0] + dx, p[1] - dy)
        _arrow(draw, p, q, ink, line_w)
        # Label right of the front face, under the depth arrow: clear of the width label.
        mask = mask_for(by_role["receding"], w - fx1 - 8)
        cx = min(max(p[0] + dx * 0.5, fx1 + 4 + mask.width / 2), w - mask.width / 2 - 2)
        _paste_text(img, mask, (cx, min(p[1] + gap * 0.3 + mask.height * 0.6, h - mask.height / 2)), ink)
    # A heading above the drawing ("Product Dimensions") and maybe one distractor line.
    heading = _pick(rng, ("Product Dimensions", "DIMENSIONS", "Size", spec.title or "Size chart"))
    lines = [_Line(heading, ctx.em(ctx.prof.other_em), ctx.head_font, ink)]
    lines += [_Line(t, ctx.em(ctx.prof.small_em), ctx.font, ink) for t in spec.lines[:1]]
    _layout(img, (w * 0.05, h * 0.01, w * 0.95, h * 0.16), lines, rng)


def _paint_table(img: Image.Image, ctx: _Ctx) -> None:
    """A specification table: name | value rows, truths mixed with other attributes."""
    rng, spec = ctx.rng, ctx.spec
    w, h = img.size
    draw = ImageDraw.Draw(img)
    ground = _bg_color(img)
    ink = _text_color(rng, ground, ctx.prof)
    rows: list[tuple[str, str]] = []
    combo_done = False
    for t in spec.truths:
        if spec.options.get("combo") and t.text == spec.options["combo"]:
            if not combo_done:
                rows.append(("Dimensions", t.text))
                combo_done = True
            continue
        rows.append((_pick(rng, RENDERERS[t.entity].table_names), t.printed_text.replace("\n", " ")))
    others = [("Material", _pick(rng, ("Steel", "Plastic", "Wood", "Aluminium", "Cotton", "Glass"))),
              ("Color", _pick(rng, ("Black", "White", "Grey", "Red", "Blue", "Natural"))),
              ("Model", f"{_pick(rng, ('XK', 'TR', 'PL', 'HD'))}-{_rint(rng, 100, 9999)}"),
              ("Warranty", f"{_rint(rng, 1, 5)} years"), ("Package", f"{_rint(rng, 1, 6)} pcs")]
    for conf in spec.confusers:
        others.append(("Note", conf))
    extra = [others[int(i)] for i in rng.permutation(len(others))[: _rint(rng, 1, 3)]]
    rows += extra
    order = rng.permutation(len(rows))
    rows = [rows[int(i)] for i in order]
    top = h * _uniform(rng, 0.14, 0.22)
    title = _pick(rng, ("Specifications", "Product details", "Technical data", spec.title or "Details"))
    _layout(img, (w * 0.05, h * 0.02, w * 0.95, top), [_Line(title, ctx.em(ctx.prof.other_em), ctx.head_font, ink)], rng)
    x0, x1 = w * 0.05, w * 0.95
    split = x0 + (x1 - x0) * _uniform(rng, 0.4, 0.5)
    row_h = min((h * 0.95 - top) / max(1, len(rows)), h * 0.16)
    shade = _shade(ground, -0.1) if _lum(ground) > 0.5 else _shade(ground, 0.2)
    for i, (name, value) in enumerate(rows):
        ry0, ry1 = top + i * row_h, top + (i + 1) * row_h
        if i % 2 == 0:
            draw.rectangle((x0, ry0, x1, ry1), fill=shade)
        draw.line((x0, ry1, x1, ry1), fill=_shade(ink, 0.5), width=1)
        em = ctx.value_em()
        _layout(img, (x0, ry0, split, ry1), [_Line(name, em * 0.9, ctx.font, ink)], rng, align="left")
        _layout(img, (split, ry0, x1, ry1), [_Line(value, em, ctx.font, ink, ctx.squeeze)], rng, align="left")
    draw.line((split, top, split, top + len(rows) * row_h), fill=_shade(ink, 0.5), width=1)


def _degrade(img: Image.Image, ctx: _Ctx) -> Image.Image:
    """Camera/encoder damage: small rotation, noise, resampling, blur, a low-quality JPEG round trip."""
    rng, prof = ctx.rng, ctx.prof
    if _chance(rng, prof.p_rotate):
        angle = _uniform(rng, -prof.max_rotate, prof.max_rotate)
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=_bg_color(img))  # bicubic: 2x slower
    if _chance(rng, prof.p_noise):
        sigma = _uniform(rng, 3.0, 9.0)
        noise = rng.standard_normal(size=(img.height, img.width, 1), dtype=np.float32) * sigma
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    if _chance(rng, prof.p_downscale):
        k = _uniform(rng, 0.45, 0.75)
        small = img.resize((max(1, int(img.width * k)), max(1, int(img.height * k))), Image.Resampling.BILINEAR)
        img = small.resize(img.size, Image.Resampling.BILINEAR)
    if _chance(rng, prof.p_blur):
        img = img.filter(ImageFilter.BoxBlur(_uniform(rng, *prof.blur)))  # ~4x faster than GaussianBlur
    if _chance(rng, prof.p_jpeg):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=_rint(rng, *prof.jpeg_quality))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


# --------------------------------------------------------------------------------------------------
# Samples.
# --------------------------------------------------------------------------------------------------


@dataclass
class SampleItem:
    """One generated image: its file name (the link's basename), spec, picture and group id."""

    name: str
    spec: ItemSpec
    image: Image.Image
    group_id: int


def iter_items(n_images: int, seed: int, difficulty: str = "mixed", entities: Iterable[str] | None = None,
               image_size: tuple[int, int] = (640, 1000)) -> Iterator[SampleItem]:
    """Generate images in memory. Image ``i`` depends only on (seed, i), so a smaller sample is a prefix."""
    _profile(difficulty)
    allowed = _check_entities(entities)
    if image_size[0] < 64 or image_size[0] > image_size[1]:
        raise ValueError(f"image_size must be (min_side, max_side) with 64 <= min <= max, not {image_size}")
    used: set[str] = set()
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        name = _image_name(rng)
        while name in used:  # practically never; keeps names unique deterministically
            name = _image_name(rng)
        used.add(name)
        spec = make_spec(rng, difficulty=difficulty, entities=allowed, image_size=image_size)
        image = render_item(spec, rng)
        group_id = _pick(rng, _GROUP_IDS[spec.category])
        yield SampleItem(f"{name}.jpg", spec, image, group_id)


def generate_sample(out_dir: Path, n_images: int, seed: int, link_base: str = DEFAULT_LINK_BASE,
                    entities: Iterable[str] | None = None, image_size: tuple[int, int] = (640, 1000),
                    difficulty: str = "mixed") -> pd.DataFrame:
    """Write ``n_images`` labeled images and their CSVs under ``out_dir``; return the labeled rows.

    Writes ``images/<name>.jpg``; ``labels.csv`` (image_link,group_id,entity_name,entity_value) and
    ``catalog.csv`` (index,image_link,group_id,entity_name: the same rows, unlabeled, index = row number, so
    evaluate scores its predictions against ``labels.csv``). One image gives one row per value it states (a
    drawing with width and height gives two rows).
    """
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, not {n_images}")
    if not link_base.endswith("/"):
        link_base += "/"
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    quality = _profile(difficulty).save_quality
    allowed = _check_entities(entities)
    rows: list[dict[str, Any]] = []
    for item in iter_items(n_images, seed, difficulty=difficulty, entities=entities, image_size=image_size):
        item.image.save(images_dir / item.name, format="JPEG", quality=quality)
        link = link_base + item.name
        for t in item.spec.truths:
            if t.entity in allowed:
                rows.append({"image_link": link, "group_id": item.group_id, "entity_name": t.entity,
                             "entity_value": t.label})
    labels = pd.DataFrame(rows, columns=["image_link", "group_id", "entity_name", "entity_value"])
    write_catalogs(labels, out_dir)
    return labels


def write_catalogs(labels: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Writes a labeled catalog's two files under ``out_dir``: ``labels.csv`` as given and ``catalog.csv``
    (the same rows unlabeled, index = row number); returns them."""
    paths = (out_dir / "labels.csv", out_dir / "catalog.csv")
    labels.to_csv(paths[0], index=False, lineterminator="\n")
    catalog = labels.drop(columns=["entity_value"]).copy()
    catalog.insert(0, "index", range(len(catalog)))
    catalog.to_csv(paths[1], index=False, lineterminator="\n")
    return paths
