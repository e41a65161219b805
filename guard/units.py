"""Canonical units of numeric answers: which spellings around a number name the same unit."""

from __future__ import annotations

import re

# Spellings of each canonical unit, lower case. There is deliberately no conversion between units:
# "5 km" and "5000 m" carry different units and so do not match. That errs towards "different" only
# when a path answers in another unit than the others, which is rare and arguably a different answer.
_SPELLINGS: dict[str, tuple[str, ...]] = {
    # Length. A bare "in" is left out: "5 in total" is far more common than inches.
    "mm": ("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
    "cm": ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    "m": ("m", "meter", "meters", "metre", "metres"),
    "km": ("km", "kms", "kilometer", "kilometers", "kilometre", "kilometres"),
    "inch": ("inch", "inches"),
    "ft": ("ft", "foot", "feet"),
    "yd": ("yd", "yds", "yard", "yards"),
    "mi": ("mi", "mile", "miles"),
    # Time.
    "ms": ("ms", "millisecond", "milliseconds"),
    "s": ("s", "sec", "secs", "second", "seconds"),
    "min": ("min", "mins", "minute", "minutes"),
    "h": ("h", "hr", "hrs", "hour", "hours"),
    "day": ("day", "days"),
    "week": ("wk", "wks", "week", "weeks"),
    "month": ("month", "months"),
    "year": ("yr", "yrs", "year", "years"),
    # Mass. "pound(s)" is left out: it is money as often as mass.
    "mg": ("mg", "milligram", "milligrams"),
    "g": ("g", "gram", "grams", "gramme", "grammes"),
    "kg": ("kg", "kgs", "kilogram", "kilograms", "kilo", "kilos"),
    "oz": ("oz", "ounce", "ounces"),
    "lb": ("lb", "lbs"),
    # Volume.
    "ml": ("ml", "milliliter", "milliliters", "millilitre", "millilitres"),
    "l": ("l", "liter", "liters", "litre", "litres"),
    "gal": ("gal", "gallon", "gallons"),
    "cup": ("cup", "cups"),
    # Money.
    "USD": ("$", "usd", "dollar", "dollars", "buck", "bucks"),
    "cent": ("¢", "cent", "cents"),
    "EUR": ("€", "eur", "euro", "euros"),
    "GBP": ("£", "gbp"),
    # Percent.
    "%": ("%", "percent", "percentage", "pct"),
}
_CANONICAL = {spelling: unit for unit, spellings in _SPELLINGS.items() for spelling in spellings}
_LENGTHS = frozenset(("mm", "cm", "m", "km", "inch", "ft", "yd", "mi"))
_POWER_WORDS = {"square": "^2", "sq": "^2", "cubic": "^3", "cu": "^3"}
_RATE_WORDS = frozenset(("/", "per"))

_POWER_RE = re.compile(r"\^\s*\{?\s*([23])\s*\}?")
_TOKEN_RE = re.compile(r"[%/¢$€£]|[^\s%/¢$€£]+")


def canonical_unit(suffix: str, prefix: str = "") -> str | None:
    """The canonical unit of a number with `prefix` (a currency symbol or "") before it and `suffix` after it.

    None when neither names a known unit, when they name different ones, or for rates ("km/h",
    "$5 per hour"): a rate's unit is not the unit of its numerator, and rates are rare enough as
    final answers that leaving them unit-less (comparable to anything) is the safer mistake.
    """
    tokens = _tokens(suffix)
    unit, rest = _leading_unit(tokens)
    if rest and rest[0] in _RATE_WORDS:
        return None
    prefix_unit = _CANONICAL.get(prefix.strip().lower()) if prefix.strip() else None
    if prefix_unit is not None and unit is not None and prefix_unit != unit:
        return None
    return prefix_unit or unit


def _tokens(text: str) -> list[str]:
    text = _POWER_RE.sub(r"^\1", text.lower().replace("²", "^2").replace("³", "^3"))
    text = re.sub(r"\bper\s+cent\b", "percent", text)
    tokens = (token.strip(".,;:!?") for token in _TOKEN_RE.findall(text))
    return [token for token in tokens if token]


def _leading_unit(tokens: list[str]) -> tuple[str | None, list[str]]:
    """The unit the tokens start with (if any) and the tokens after it."""
    if not tokens:
        return None, tokens
    power = _POWER_WORDS.get(tokens[0], "")
    words = tokens[1:] if power else tokens
    if not words:
        return None, tokens
    word = words[0]
    if word.endswith(("^2", "^3")) and not power:
        word, power = word[:-2], word[-2:]
    unit = _CANONICAL.get(word)
    if unit is None:
        return None, tokens
    if power:
        # "square dollars" is no unit; only lengths have areas and volumes.
        if unit not in _LENGTHS:
            return None, tokens
        unit += power
    return unit, words[1:]
