"""Numbers and clock times written in prose: where they are, with the unit words after them."""

from __future__ import annotations

import re
from collections.abc import Iterator

from guard.answers.answer import Answer, number_answer
from guard.answers.normalize import normalize_answer, time_answer
from guard.answers.numbers import parse_plain_number
from guard.clock import TIME_IN_TEXT
from guard.units import canonical_unit

# Not after "^": the 2 of "12 cm^2" is an exponent, not a value.
_NUMBER_IN_TEXT = (
    r"(?<![\w.^])(?:[-\u2212]\s?)?[$€£¥]?"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+(?![\d.]))?|\.\d+)"
)
# Times first: at "2:30 pm" the number alternative would read 2 (and then 30).
VALUE_IN_TEXT_RE = re.compile(rf"(?P<time>{TIME_IN_TEXT})|(?P<number>{_NUMBER_IN_TEXT})", re.IGNORECASE)
# The unit words right after a number found in prose ("km", "square meters", "per hour", "km/h").
_UNIT_AFTER_RE = re.compile(
    r"[ \t]*(?:per\s+cent\b"
    r"|(?:(?:per|square|sq|cubic|cu)\s+)?(?:%|[A-Za-z][\w/^²³{}]*)(?:\s+per\s+[A-Za-z]+)?)",
    re.IGNORECASE,
)
_CURRENCY_RE = re.compile(r"[$€£¥]")

_NEGATED_BEFORE_RE = re.compile(r"(?:\bnot|n['\u2019]t)\s*$", re.IGNORECASE)
# A value (or a closing bracket) right before a minus makes the minus an operator: "24 - 9".
_OPERAND_BEFORE_RE = re.compile(r"[\d)%]\s*$")


def written_values(text: str) -> list[Answer]:
    """Numbers and clock times written in `text`, in order, operands included. A minus between two
    values is the operator, not a sign: "24 - 9 = 15" wrote 24, 9 and 15."""
    values = []
    for match in VALUE_IN_TEXT_RE.finditer(text):
        answer = _value_answer(text, match)
        if answer is None:
            continue
        if answer.raw[:1] in "-\u2212" and _OPERAND_BEFORE_RE.search(text, 0, match.start()):
            answer = normalize_answer(answer.raw[1:]) or answer
        values.append(answer)
    return values


def last_number(text: str) -> Answer | None:
    for match in reversed(list(VALUE_IN_TEXT_RE.finditer(text))):
        # "11, not 12": a negated value is what the answer is not.
        if _NEGATED_BEFORE_RE.search(text, max(0, match.start() - 8), match.start()):
            continue
        answer = _value_answer(text, match)
        if answer is not None:
            return answer
    return None


def values_in_text(text: str) -> Iterator[Answer]:
    """Numbers and clock times in prose, in order, as answers."""
    for match in VALUE_IN_TEXT_RE.finditer(text):
        answer = _value_answer(text, match)
        if answer is not None:
            yield answer


def _value_answer(text: str, match: re.Match[str]) -> Answer | None:
    if match.group("time") is not None:
        return time_answer(match.group(0), match.group(0))
    raw = match.group(0)
    value = parse_plain_number(raw)
    if value is None:
        return None
    # The answer's unit is derived from its raw, so the raw keeps the words that change the unit:
    # "5 km", and "$15 per hour" (a rate: no unit, where "$15" alone would be dollars).
    following = _UNIT_AFTER_RE.match(text, match.end())
    if following is not None:
        currency = _CURRENCY_RE.search(raw)
        prefix = currency.group(0) if currency is not None else ""
        if canonical_unit(following.group(0), prefix) != canonical_unit("", prefix):
            raw += following.group(0)
    return number_answer(raw, value)
