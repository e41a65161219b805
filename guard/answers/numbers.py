"""Plain numbers in answers: parsing "$1,234.50", "\\frac{3}{4}", "x = 5 km" to a value and unit, and printing values."""

from __future__ import annotations

import functools
import re
from fractions import Fraction

from guard.answers.wrappers import strip_wrappers
from guard.units import canonical_unit

_PLAIN_NUMBER_RE = re.compile(
    r"(?P<sign>[-+]?)\s*(?P<currency>[$€£¥]?)\s*(?P<sign2>[-+]?)\s*"
    r"(?:"
    r"(?:(?P<whole>\d+)\s+)?(?P<num>\d+)\s*/\s*(?P<den>\d+)"
    r"|(?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?P<exp>[eE][-+]?\d{1,3})?"
    r")"
    r"(?P<rest>.*)",
    re.DOTALL,
)
_LATEX_FRAC_RE = re.compile(
    r"(?P<sign>[-+]?)\s*\\[dt]?frac\s*"
    r"(?:\{\s*(?P<n>[-+]?\d+(?:\.\d+)?)\s*\}|(?P<n1>\d))\s*"
    r"(?:\{\s*(?P<d>[-+]?\d+(?:\.\d+)?)\s*\}|(?P<d1>\d))"
    r"(?P<rest>.*)",
    re.DOTALL,
)
_ASSIGNMENT_RE = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_UNIT_TOKEN_RE = re.compile(r"/?[A-Za-z][A-Za-z./²³]*(?:\^\{?\d\}?)?")
# Single letters that read as units after a number; any other single letter is more likely a
# variable ("2x", "3 n"), which must not silently become the number.
_SINGLE_LETTER_UNITS = frozenset("mgshlLKVWJNACF")
# Words after a number that change its meaning ("12 or 13", "5 more than x", "2 pi").
_NON_UNIT_WORDS = frozenset(
    "or and to plus minus times over divided by than more less not out pi sqrt e i".split()
)
_MAX_UNIT_TOKENS = 4

_LATEX_TEXT_CMD_RE = re.compile(r"\\(?:text|textrm|textbf|textit|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
_LATEX_REPLACEMENTS = (
    ("\u2212", "-"),  # unicode minus
    ("\\$", "$"),
    ("\\%", "%"),
    ("{,}", ","),
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", " "),
    ("\\ ", " "),
    ("\\quad", " "),
)

# "4 (2+2)", "15 (24 - 9)": a number followed by its working. math-verify reads the juxtaposition
# as a product (16, 225); the model meant the leading number.
_TRAILING_WORKING_RE = re.compile(r"(?P<head>.*?\S)\s+\((?:[^()]|\([^()]*\))*\)", re.DOTALL)

NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90})

# Beyond this many decimal places a terminating expansion is less readable than p/q.
_MAX_DECIMAL_PLACES = 30


def parse_plain_number(s: str) -> Fraction | None:
    quantity = parse_quantity(s)
    return quantity[0] if quantity is not None else None


@functools.lru_cache(maxsize=4096)
def unit_of(raw: str) -> str | None:
    quantity = parse_quantity(strip_wrappers(raw))
    return quantity[1] if quantity is not None else None


def parse_quantity(s: str) -> tuple[Fraction, str | None] | None:
    """A plain number's value and canonical unit ("$5", "x = 5 km", "15 km (24 - 9)")."""
    s = _clean_latex_number(s)
    quantity = _parse_assigned_number(s)
    if quantity is None and s.endswith(")"):
        working = _TRAILING_WORKING_RE.fullmatch(s)
        if working is not None:
            quantity = _parse_assigned_number(working.group("head"))
    return quantity


def _parse_assigned_number(s: str) -> tuple[Fraction, str | None] | None:
    quantity = _parse_number_body(s)
    if quantity is None:
        match = _ASSIGNMENT_RE.match(s)
        if match is not None:
            quantity = _parse_number_body(s[match.end() :])
    return quantity


def _clean_latex_number(s: str) -> str:
    s = s.strip()
    for old, new in _LATEX_REPLACEMENTS:
        if old in s:
            s = s.replace(old, new)
    if "\\" in s or "°" in s:
        s = _DEGREE_RE.sub("", s)
        s = _LATEX_TEXT_CMD_RE.sub(r" \1 ", s)
    return s.strip().rstrip(".").strip()


def _parse_number_body(s: str) -> tuple[Fraction, str | None] | None:
    match = _LATEX_FRAC_RE.fullmatch(s)
    currency = ""
    try:
        if match is not None:
            value = Fraction(match.group("n") or match.group("n1")) / Fraction(
                match.group("d") or match.group("d1")
            )
            negative = match.group("sign") == "-"
        else:
            match = _PLAIN_NUMBER_RE.fullmatch(s)
            if match is None:
                return None
            if match.group("den") is not None:
                value = Fraction(int(match.group("num")), int(match.group("den")))
                if match.group("whole"):
                    value += int(match.group("whole"))
            else:
                value = Fraction(match.group("dec").replace(",", "") + (match.group("exp") or ""))
            negative = (match.group("sign") == "-") != (match.group("sign2") == "-")
            currency = match.group("currency")
    except (ValueError, ZeroDivisionError, OverflowError):
        # Division by zero, or more digits than int() accepts: not a usable number.
        return None
    if not _is_unit_suffix(match.group("rest")):
        return None
    return (-value if negative else value), canonical_unit(match.group("rest"), currency)


def _is_unit_suffix(rest: str) -> bool:
    rest = rest.strip()
    if not rest:
        return True
    if rest.startswith("%"):
        rest = rest[1:].strip()
    tokens = rest.split()
    if len(tokens) > _MAX_UNIT_TOKENS:
        return False
    for token in tokens:
        token = token.rstrip(".,")
        if token.lower() == "percent":
            continue
        if not _UNIT_TOKEN_RE.fullmatch(token):
            return False
        word = token.lstrip("/")
        if word.lower() in _NON_UNIT_WORDS:
            return False
        if len(word) == 1 and word not in _SINGLE_LETTER_UNITS:
            return False
    return True


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    places = max(twos, fives)
    if denominator != 1 or places > _MAX_DECIMAL_PLACES:
        return f"{value.numerator}/{value.denominator}"
    scaled = abs(value.numerator) * 10**places // value.denominator
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"
