"""The Answer value: one final answer's raw text, canonical form, kind and unit."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction

from guard.answers.numbers import format_number, unit_of


class AnswerKind(enum.Enum):
    NUMBER = "number"
    OPTION = "option"
    TEXT = "text"
    # A LaTeX/sympy expression that is not a plain (rational) number, e.g. sqrt(2), x + 1, 2*pi.
    MATH = "math"
    # A clock time ("12:30", "2:30 pm"): its digits are not the number 1230 or 2.
    TIME = "time"


@dataclass(frozen=True)
class Answer:
    """One final answer.

    `normalized` is canonical, so equal strings of the same kind always mean equivalent answers:
      NUMBER: integers as "12"; other rationals as the exact shortest decimal when the value has a
              terminating decimal expansion ("1234.5", "0.75", "-0.5"), else the reduced fraction
              ("1/3", "-2/7"). So "3/4", "0.75", "\\frac{3}{4}" and "0.750" all become "0.75".
              Percentages keep their number ("50%" -> "50").
      OPTION: the upper-case letter A-J ("B").
      TEXT:   lower case, punctuation and articles removed, single spaces ("paris", "eiffel tower").
      MATH:   sympy's printing of the parsed expression ("sqrt(2)", "x + 1", "2*pi"); the compacted
              LaTeX when math-verify cannot parse it.
      TIME:   24-hour "HH:MM", ":SS" added when non-zero ("2:30 pm" -> "14:30", "12:05 am" -> "00:05").

    `unit` is the canonical unit of a NUMBER (see guard/units.py: "km", "h", "USD", "%"), None when
    it has none or an unknown one ("12 apples"). It is not part of `normalized`, so "5 km" and "5 m"
    share normalized "5"; answers_equivalent and cluster_answers tell them apart by `unit`.
    """

    raw: str
    normalized: str
    kind: AnswerKind
    # Derived from `raw` rather than passed in, so an Answer rebuilt from a stored
    # (raw, normalized, kind) triple (guard/replay.py) has the same unit as the original.
    unit: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.kind is AnswerKind.NUMBER:
            object.__setattr__(self, "unit", unit_of(self.raw))


def number_answer(raw: str, value: Fraction) -> Answer:
    return Answer(raw=raw, normalized=format_number(value), kind=AnswerKind.NUMBER)


def number_value(answer: Answer) -> Fraction | None:
    try:
        return Fraction(answer.normalized)
    except (ValueError, ZeroDivisionError):
        return None
