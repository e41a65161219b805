"""Final-answer extraction, canonicalisation and equivalence clustering for sampled reasoning paths."""

from __future__ import annotations

import enum
import functools
import logging
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator, Sequence

from guard.clock import TIME_IN_TEXT, canonical_time
from guard.units import canonical_unit


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
            object.__setattr__(self, "unit", _unit_of(self.raw))


# ---------------------------------------------------------------------------------------------
# Patterns
# ---------------------------------------------------------------------------------------------

# Few-shot completion models keep going with the next exemplar; only the text before it is ours.
_CONTINUATION_RE = re.compile(r"^[ \t>*_#]*question\s*\d*\s*[:：]", re.IGNORECASE | re.MULTILINE)

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASH_LINE_RE = re.compile(r"^[ \t]*####[ \t]*(.*)$", re.MULTILINE)
_MARKER_RE = re.compile(
    r"(?P<final>\bfinal\s+answer\b[\s*_]*(?P<final_sep>is\b|[:=])?)"
    r"|(?P<answer>\banswer\b(?:\s+to\s+[^.:\n]{1,80}?)?[\s*_]*(?P<answer_sep>is\b|[:=]))"
    r"|(?P<option>\b(?:correct|right|best)\s+(?:option|choice)\s+is\b)",
    re.IGNORECASE,
)

_OPTION_KEYWORD_RE = re.compile(r"(?:option|choice)\s*[:#]?\s*\(?([A-Ja-j])\)?", re.IGNORECASE)
# An option letter leading a longer answer: "(B) 42 apples", "B) 42", "b. 42", "option C because".
# A lower-case letter needs its ")", "." or ":" too: "a dog", "a lot" are words, not option A.
_OPTION_PREFIX_RE = re.compile(
    r"\(\s*(?P<p>[A-Ja-j])\s*\)(?=[\s.,:;]|$)"
    r"|(?P<bare>[A-Ja-j])(?:\)|[.:]\s)"
    r"|(?i:option|choice)\s*\(?(?P<kw>[A-Ja-j])\)?(?![\w])"
)

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

# Not after "^": the 2 of "12 cm^2" is an exponent, not a value.
_NUMBER_IN_TEXT = (
    r"(?<![\w.^])(?:[-\u2212]\s?)?[$€£¥]?"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+(?![\d.]))?|\.\d+)"
)
# Times first: at "2:30 pm" the number alternative would read 2 (and then 30).
_VALUE_IN_TEXT_RE = re.compile(rf"(?P<time>{TIME_IN_TEXT})|(?P<number>{_NUMBER_IN_TEXT})", re.IGNORECASE)
# The unit words right after a number found in prose ("km", "square meters", "per hour", "km/h").
_UNIT_AFTER_RE = re.compile(
    r"[ \t]*(?:per\s+cent\b"
    r"|(?:(?:per|square|sq|cubic|cu)\s+)?(?:%|[A-Za-z][\w/^²³{}]*)(?:\s+per\s+[A-Za-z]+)?)",
    re.IGNORECASE,
)
_CURRENCY_RE = re.compile(r"[$€£¥]")

# "4 (2+2)", "15 (24 - 9)": a number followed by its working. math-verify reads the juxtaposition
# as a product (16, 225); the model meant the leading number.
_TRAILING_WORKING_RE = re.compile(r"(?P<head>.*?\S)\s+\((?:[^()]|\([^()]*\))*\)", re.DOTALL)

# "not 5, it is 6": a value the answer is said not to be, then the one it is.
_NEGATION_RE = re.compile(r"\s*(?:not|n['\u2019]t)\b", re.IGNORECASE)
_NEGATION_TURN_RE = re.compile(r"[,;](?!\d)|\s+(?:but|rather|instead)\b|\s+[-\u2013\u2014]+\s", re.IGNORECASE)
_TURN_FILLER_RE = re.compile(
    r"\s*(?:(?:but|rather|instead)\s+)?(?:(?:it|that|the\s+answer)\s*(?:is|['\u2019]s)\s+)?"
    r"(?:(?:actually|rather|instead)\s+)?",
    re.IGNORECASE,
)
_NEGATED_BEFORE_RE = re.compile(r"(?:\bnot|n['\u2019]t)\s*$", re.IGNORECASE)
# A value (or a closing bracket) right before a minus makes the minus an operator: "24 - 9".
_OPERAND_BEFORE_RE = re.compile(r"[\d)%]\s*$")
_DIGIT_RE = re.compile(r"\d")

_WRAPPER_CMD_RE = re.compile(r"\\(?:boxed|fbox|text|textrm|textbf|textit|mathrm|mathbf|mbox)\s*\{")
_WRAPPER_PAIRS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ('"', '"'), ("\u201c", "\u201d"))

_CLAUSE_END_RE = re.compile(r"\.\s|[;!?]\s|,\s|\s(?:because|since|as|so|which|but)\s", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.\s|[;!?]\s")

_MATH_OPERATOR_RE = re.compile(r"[\^_{}+*/=<>√π∞]")
_MATH_WEAK_OPERATOR_RE = re.compile(r"[-()]")
_COEFFICIENT_VAR_RE = re.compile(r"-?\d+(?:\.\d+)?\s*[a-zA-Z]")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_MATH_WORDS = frozenset(
    "sqrt frac dfrac tfrac pi infty inf cdot times div pm mp sin cos tan cot sec csc log ln exp "
    "arcsin arccos arctan left right le ge leq geq neq cup cap emptyset binom circ".split()
)
# Longer strings are prose or garbage; sympy on them is slow and pointless.
_MAX_MATH_CHARS = 300
_MAX_TEXT_WORDS = 10

_ARTICLES = frozenset(("a", "an", "the"))
# "the answer is correct" judges an earlier answer rather than stating one.
_NOT_AN_ANSWER_START = frozenset(
    "correct incorrect right wrong reasonable plausible valid invalid consistent clear unclear "
    "not as that this below above given follows".split()
)
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90})

# Beyond this many decimal places a terminating expansion is less readable than p/q.
_MAX_DECIMAL_PLACES = 30
_FLOAT_REL_TOL = 1e-6
# Sub-expressions beyond these magnitudes would make sympy build astronomically large integers.
_MAX_MAGNITUDE = 1e300
# Well below the 4300 digits int <-> str refuses to convert.
_MAX_EXACT_BITS = 4000


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def extract_answer(text: str) -> Answer | None:
    """Final answer of a reasoning path, or None when none is extractable."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = _cut_continuation(text)
    explicit = _explicit_answer(text)
    if explicit is not None:
        return explicit[1]
    return _last_number(text)


def working_text(text: str) -> str:
    """A path's working: its text up to, not including, the statement its final answer is read from
    ("Answer: 21", "the answer is 21", "\\boxed{21}", "#### 21") and anything after it.

    Always a prefix of `text`, so a prompt built on it continues the path's own tokens. The whole line
    of the statement goes when only words precede its marker ("So the answer is 21", "**Final Answer:**
    21"); working on that line stays ("15 + 6 = 21. Answer: 21" keeps "15 + 6 = 21."). Without an
    explicit statement (the answer is the last number, or there is none), the text before any invented
    next exemplar ("Question: ...").
    """
    if not isinstance(text, str):
        return ""
    cut = _cut_continuation(text)
    explicit = _explicit_answer(cut)
    if explicit is None:
        return cut
    start = explicit[0]
    line_start = cut.rfind("\n", 0, start) + 1
    if not _DIGIT_RE.search(cut, line_start, start):
        return cut[:line_start]
    return cut[:start].rstrip(" \t")


def written_values(text: str) -> list[Answer]:
    """Numbers and clock times written in `text`, in order, operands included. A minus between two
    values is the operator, not a sign: "24 - 9 = 15" wrote 24, 9 and 15."""
    values = []
    for match in _VALUE_IN_TEXT_RE.finditer(text):
        answer = _value_answer(text, match)
        if answer is None:
            continue
        if answer.raw[:1] in "-\u2212" and _OPERAND_BEFORE_RE.search(text, 0, match.start()):
            answer = normalize_answer(answer.raw[1:]) or answer
        values.append(answer)
    return values


def path_values(text: str) -> list[str]:
    """The distinct normalised values a path wrote in its working (`working_text`): the operands and
    results of its steps and the numbers it stated, in order of first appearance."""
    return list(dict.fromkeys(a.normalized for a in written_values(working_text(text))))


def normalize_answer(raw: str) -> Answer | None:
    """Canonicalise a short answer string (also used for short probe answers to sub-questions)."""
    if not isinstance(raw, str):
        return None
    raw = raw.strip()
    s = _strip_wrappers(raw)
    if not s:
        return None
    answer = _normalize_fast(raw, s) or _option_prefix(raw, s)
    if answer is not None:
        return answer
    if _looks_like_math(s):
        answer = _normalize_math(raw, s)
        if answer is not None:
            return answer
    return _normalize_text(raw, s)


def answers_equivalent(a: Answer, b: Answer) -> bool:
    if _units_conflict(a.unit, b.unit):
        return False
    if a.kind is b.kind and a.normalized == b.normalized:
        return True
    if a.kind is b.kind:
        if a.kind is AnswerKind.NUMBER:
            va, vb = _number_value(a), _number_value(b)
            return va is not None and va == vb
        if a.kind is AnswerKind.MATH:
            return _math_equivalent(a, b)
        return False
    if {a.kind, b.kind} == {AnswerKind.NUMBER, AnswerKind.MATH}:
        number, expr = (a, b) if a.kind is AnswerKind.NUMBER else (b, a)
        value = _number_value(number)
        approx = _math_float(_strip_wrappers(expr.raw))
        if value is None or approx is None:
            return False
        # A MATH answer that is numeric is irrational (rationals become NUMBER), so only an
        # approximate comparison can ever match it.
        return math.isclose(float(value), approx, rel_tol=_FLOAT_REL_TOL)
    return False


def cluster_answers(answers: Sequence[Answer | None]) -> list[list[int]]:
    """Group indices of equivalent answers; None answers are in no cluster; clusters ordered by first appearance."""
    clusters: list[list[int]] = []
    representatives: list[Answer] = []
    # The first unit seen in each cluster: a unit-less representative ("5") matches both "5 km" and
    # "5 m", which must still not end up in one cluster through it.
    cluster_units: list[str | None] = []
    # Identical answers land where their first copy did, so math-verify runs once per distinct
    # answer instead of once per sample. The unit is part of the identity: "5 km" and "5 m" share
    # their normalized "5".
    placed: dict[tuple[AnswerKind, str, str | None], int] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        key = (answer.kind, answer.normalized, answer.unit)
        cluster = placed.get(key)
        if cluster is None:
            cluster = next(
                (
                    c
                    for c, rep in enumerate(representatives)
                    if not _units_conflict(cluster_units[c], answer.unit) and answers_equivalent(rep, answer)
                ),
                None,
            )
            if cluster is None:
                cluster = len(clusters)
                clusters.append([])
                representatives.append(answer)
                cluster_units.append(None)
            cluster_units[cluster] = cluster_units[cluster] or answer.unit
            placed[key] = cluster
        clusters[cluster].append(index)
    return clusters


def _units_conflict(a: str | None, b: str | None) -> bool:
    # Only two known, different units conflict: a bare "5" may be the "5 km" the question asked for.
    return a is not None and b is not None and a != b


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def _cut_continuation(text: str) -> str:
    for match in _CONTINUATION_RE.finditer(text):
        # A "Question:" heading before any reasoning is the model restating its own question.
        if text[: match.start()].strip():
            return text[: match.start()]
    return text


# Each candidate carries its source because sources differ in how far they can be trusted:
# "boxed" and "colon" ("Answer:") may state a text answer, "is" ("the answer is ...") may not when
# it only judges ("... is correct"), "hash" and "bare" ("final answer" without ":"/"is") only count
# when they hold a number, an option or a formula.
def _explicit_candidates(text: str) -> list[tuple[int, str, str]]:
    candidates: list[tuple[int, str, str]] = []
    for match in _BOXED_RE.finditer(text):
        close = _matching_brace(text, match.end() - 1)
        # An unclosed box is a truncated generation; its content is not a finished answer.
        if close is not None:
            candidates.append((match.start(), "boxed", text[match.end() : close]))
    for match in _HASH_LINE_RE.finditer(text):
        candidates.append((match.start(), "hash", match.group(1)))
    for match in _MARKER_RE.finditer(text):
        separator = match.group("final_sep") or match.group("answer_sep")
        if match.group("option") is not None:
            source = "is"
        elif separator is None:
            source = "bare"
        else:
            source = "is" if separator.lower() == "is" else "colon"
        candidates.append((match.start(), source, _rest_of_line(text, match.end())))
    return candidates


def _explicit_answer(text: str) -> tuple[int, Answer] | None:
    """The last explicit answer statement that reads as an answer: (its offset in `text`, the answer)."""
    for start, source, span in sorted(_explicit_candidates(text), key=lambda c: c[0], reverse=True):
        answer = _answer_from_span(span, source)
        if answer is not None:
            return start, answer
    return None


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    line = text[start:] if end < 0 else text[start:end]
    if line.strip(" \t*_:"):
        return line
    # "**Final Answer:**" on its own line is followed by the answer on the next non-empty line.
    for following in text[start:].splitlines()[1:]:
        if following.strip(" \t*_:"):
            return following
    return ""


def _answer_from_span(span: str, source: str) -> Answer | None:
    # "not 5, it is 6": the answer is what follows the turn (a loop, not recursion: "not 5, not 6,
    # ..." may repeat). "not 5" alone only says what the answer is not; "Not enough information"
    # is still a text answer.
    while (negation := _NEGATION_RE.match(span)) is not None:
        turn = _NEGATION_TURN_RE.search(span, negation.end())
        if turn is None:
            if _VALUE_IN_TEXT_RE.search(span):
                return None
            break
        span = span[turn.end() :]
        span = span[_TURN_FILLER_RE.match(span).end() :]
    raw = span.strip().strip("*_").strip()
    s = _strip_wrappers(raw)
    if not s:
        return None
    answer = _normalize_fast(raw, s)
    if answer is not None:
        return answer
    if source == "boxed":
        # Whatever the model boxed is its answer, prose included.
        return normalize_answer(raw)

    answer = _option_prefix(None, s)
    if answer is not None:
        return answer

    if "=" in s:
        # "5 + 7 = 12": the result is what follows the last equals sign.
        tail = s.rsplit("=", 1)[1]
        answer = _normalize_fast(tail.strip(), _strip_wrappers(tail))
        if answer is not None and answer.kind is AnswerKind.NUMBER:
            return answer

    sentence = _SENTENCE_END_RE.split(s, maxsplit=1)[0].strip()
    if sentence != s:
        answer = _normalize_fast(sentence, _strip_wrappers(sentence))
        if answer is not None and answer.kind is not AnswerKind.TEXT:
            return answer
    if _looks_like_math(sentence):
        answer = _normalize_math(sentence, _strip_wrappers(sentence))
        if answer is not None:
            return answer

    answer = next(_values_in_text(sentence), None)
    if answer is not None:
        return answer

    if source in ("hash", "bare"):
        # "#### Step 3" headings and "the final answer will be..." prose are not text answers.
        return None
    clause = _CLAUSE_END_RE.split(" " + sentence + " ", maxsplit=1)[0].strip()
    words = clause.split()
    if not words or len(words) > _MAX_TEXT_WORDS:
        return None
    if source == "is" and words[0].lower().strip(".,:;") in _NOT_AN_ANSWER_START:
        return None
    return _normalize_text(clause, _strip_wrappers(clause))


def _last_number(text: str) -> Answer | None:
    for match in reversed(list(_VALUE_IN_TEXT_RE.finditer(text))):
        # "11, not 12": a negated value is what the answer is not.
        if _NEGATED_BEFORE_RE.search(text, max(0, match.start() - 8), match.start()):
            continue
        answer = _value_answer(text, match)
        if answer is not None:
            return answer
    return None


def _values_in_text(text: str) -> Iterator[Answer]:
    """Numbers and clock times in prose, in order, as answers."""
    for match in _VALUE_IN_TEXT_RE.finditer(text):
        answer = _value_answer(text, match)
        if answer is not None:
            yield answer


def _value_answer(text: str, match: re.Match[str]) -> Answer | None:
    if match.group("time") is not None:
        return _time_answer(match.group(0), match.group(0))
    raw = match.group(0)
    value = _parse_plain_number(raw)
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
    return _number_answer(raw, value)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def _normalize_fast(raw: str, s: str) -> Answer | None:
    """Option letters, plain numbers and number words: everything that needs no sympy."""
    if not s:
        return None
    letter = _option_letter(s)
    if letter is not None:
        return Answer(raw=raw, normalized=letter, kind=AnswerKind.OPTION)
    # Before numbers: "2:30 pm" would otherwise read as 2 with unit "pm".
    if s[0].isdigit() and (":" in s or "m" in s.lower()):
        answer = _time_answer(raw, s)
        if answer is not None:
            return answer
    value = _parse_plain_number(s)
    if value is not None:
        return _number_answer(raw, value)
    word = _NUMBER_WORDS.get(s.lower())
    if word is not None:
        return _number_answer(raw, Fraction(word))
    return None


def _option_prefix(raw: str | None, s: str) -> Answer | None:
    """Option "B" of "B) 42", "(b) 42 apples", "option C because ..."; raw None: the prefix itself."""
    match = _OPTION_PREFIX_RE.match(s)
    if match is None:
        return None
    letter = match.group("p") or match.group("bare") or match.group("kw")
    raw = match.group(0).strip() if raw is None else raw
    return Answer(raw=raw, normalized=letter.upper(), kind=AnswerKind.OPTION)


def _option_letter(s: str) -> str | None:
    # A lone lower-case letter is an option too ("b", "b)"): as a whole answer it is no word.
    match = re.fullmatch(r"\(\s*([A-Ja-j])\s*\)|\[([A-Ja-j])\]|([A-Ja-j])[).:]?", s)
    if match is None:
        match = _OPTION_KEYWORD_RE.fullmatch(s)
    if match is None:
        return None
    return next(g for g in match.groups() if g).upper()


def _time_answer(raw: str, s: str) -> Answer | None:
    normalized = canonical_time(s)
    return None if normalized is None else Answer(raw=raw, normalized=normalized, kind=AnswerKind.TIME)


def _parse_plain_number(s: str) -> Fraction | None:
    quantity = _parse_quantity(s)
    return quantity[0] if quantity is not None else None


@functools.lru_cache(maxsize=4096)
def _unit_of(raw: str) -> str | None:
    quantity = _parse_quantity(_strip_wrappers(raw))
    return quantity[1] if quantity is not None else None


def _parse_quantity(s: str) -> tuple[Fraction, str | None] | None:
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


def _number_answer(raw: str, value: Fraction) -> Answer:
    return Answer(raw=raw, normalized=_format_number(value), kind=AnswerKind.NUMBER)


def _format_number(value: Fraction) -> str:
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


def _number_value(answer: Answer) -> Fraction | None:
    try:
        return Fraction(answer.normalized)
    except (ValueError, ZeroDivisionError):
        return None


def _normalize_text(raw: str, s: str) -> Answer | None:
    lowered = re.sub(r"[-/_\u2013\u2014]", " ", s.lower())
    kept = "".join(ch for ch in lowered if ch.isalnum() or ch.isspace())
    words = [w for w in kept.split() if w not in _ARTICLES]
    if not words:
        return None
    normalized = " ".join(words)
    if normalized in _NUMBER_WORDS:
        return _number_answer(raw, Fraction(_NUMBER_WORDS[normalized]))
    return Answer(raw=raw, normalized=normalized, kind=AnswerKind.TEXT)


def _strip_wrappers(s: str) -> str:
    """Peel markdown, $...$, \\(...\\), \\boxed{...} and \\text{...} off a whole answer string."""
    previous = None
    while s != previous:
        previous = s
        s = s.strip().strip("*_`").strip()
        s = s.rstrip(".,;!").rstrip()
        for left, right in _WRAPPER_PAIRS:
            inner = s[len(left) : -len(right)]
            if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
                if left == "$" and "$" in inner:
                    continue
                s = inner
                break
        match = _WRAPPER_CMD_RE.match(s)
        if match is not None and _matching_brace(s, match.end() - 1) == len(s) - 1:
            s = s[match.end() : -1]
    return s


def _matching_brace(text: str, open_index: int) -> int | None:
    depth = 0
    index = open_index
    while index < len(text):
        char = text[index]
        if char == "\\":
            # Escaped braces (\{ \}) are set notation, not grouping.
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None


# ---------------------------------------------------------------------------------------------
# LaTeX / sympy answers via math-verify
# ---------------------------------------------------------------------------------------------


def _looks_like_math(s: str) -> bool:
    if len(s) > _MAX_MATH_CHARS:
        return False
    words = [w for w in _WORD_RE.findall(s) if w.lower() not in _MATH_WORDS]
    if "\\" in s:
        return len(words) <= 1 or all(len(w) <= 3 for w in words)
    if len(words) >= 2 or any(len(w) >= 4 for w in words):
        return False
    if _MATH_OPERATOR_RE.search(s):
        return True
    has_digit = any(ch.isdigit() for ch in s)
    return (has_digit and bool(_MATH_WEAK_OPERATOR_RE.search(s))) or bool(_COEFFICIENT_VAR_RE.fullmatch(s))


def _normalize_math(raw: str, s: str) -> Answer | None:
    expr = _first_expr(_math_parse(s))
    if expr is None:
        if "\\" not in s:
            return None
        return Answer(raw=raw, normalized=re.sub(r"\s+", "", s), kind=AnswerKind.MATH)
    value = _exact_value(expr)
    if value is not None:
        return _number_answer(raw, value)
    try:
        normalized = str(expr)
    except Exception:
        normalized = re.sub(r"\s+", "", s)
    return Answer(raw=raw, normalized=normalized, kind=AnswerKind.MATH)


# math-verify warns on every call made with its (signal-based) timeout disabled; we disable it
# on purpose (see below), so the warning is noise.
logging.getLogger("math_verify").setLevel(logging.ERROR)


@functools.lru_cache(maxsize=4096)
def _math_parse(s: str) -> tuple[Any, ...]:
    try:
        from math_verify import parse

        text = s if "$" in s else f"${s}$"
        # The default timeout is implemented with SIGALRM, which raises outside the main thread;
        # guard workers call this from a thread pool, so the timeout must stay disabled.
        return tuple(parse(text, parsing_timeout=None))
    except Exception:
        return ()


def _first_expr(parsed: tuple[Any, ...]) -> Any:
    return next((p for p in parsed if not isinstance(p, str)), None)


def _exact_value(expr: Any) -> Fraction | None:
    """The rational value of a symbol-free expression (sqrt(4), 2**10, 1.5*10**3), else None."""
    try:
        import sympy

        if not isinstance(expr, sympy.Expr) or expr.free_symbols or not _bounded(expr, sympy):
            return None
        value = expr if expr.is_Rational else expr.doit()
        if value.is_Rational:
            if max(abs(int(value.p)), int(value.q)).bit_length() > _MAX_EXACT_BITS:
                return None
            return Fraction(int(value.p), int(value.q))
        if value.is_number and value.has(sympy.Float):
            approx = complex(value.evalf(15))
            if approx.imag == 0 and math.isfinite(approx.real):
                # Floats carry ~15 significant digits; 12 drops the binary noise of 0.1 + 0.2.
                return Fraction(format(approx.real, ".12g"))
    except Exception:
        return None
    return None


def _bounded(expr: Any, sympy: Any) -> bool:
    # doit() on 9^(9^9) or 10^(-10^6) would try to build the exact integer; evalf cannot blow up.
    # The magnitude stays a sympy Float: a Python float would overflow to inf or underflow to 0.
    upper, lower = sympy.Float(_MAX_MAGNITUDE), sympy.Float(1 / _MAX_MAGNITUDE)
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, (sympy.Pow, sympy.factorial)) and node.is_number:
            magnitude = abs(node.evalf(15))
            if not magnitude.is_finite or magnitude > upper or (magnitude != 0 and magnitude < lower):
                return False
    return True


@functools.lru_cache(maxsize=4096)
def _math_float(s: str) -> float | None:
    try:
        import sympy

        expr = _first_expr(_math_parse(s))
        if not isinstance(expr, sympy.Expr) or expr.free_symbols:
            return None
        approx = complex(expr.evalf(20))
    except Exception:
        return None
    if approx.imag != 0 or not math.isfinite(approx.real):
        return None
    return approx.real


def _math_equivalent(a: Answer, b: Answer) -> bool:
    parsed_a = _math_parse(_strip_wrappers(a.raw))
    parsed_b = _math_parse(_strip_wrappers(b.raw))
    if _first_expr(parsed_a) is None or _first_expr(parsed_b) is None:
        # Unparseable LaTeX: the (already unequal) normalized strings are all we can compare.
        return False
    try:
        from math_verify import verify

        # verify() is not symmetric (assignments, intervals); votes must not depend on order.
        # timeout_seconds=None for the same SIGALRM reason as in _math_parse.
        return bool(
            verify(list(parsed_a), list(parsed_b), timeout_seconds=None)
            or verify(list(parsed_b), list(parsed_a), timeout_seconds=None)
        )
    except Exception:
        return False
