"""Canonicalising a short answer string: option letters, numbers, clock times, formulas and text."""

from __future__ import annotations

import re
from fractions import Fraction

from guard.answers.answer import Answer, AnswerKind, number_answer
from guard.answers.numbers import NUMBER_WORDS, parse_plain_number
from guard.answers.symbolic import looks_like_math, normalize_math
from guard.answers.wrappers import strip_wrappers
from guard.clock import canonical_time

_OPTION_KEYWORD_RE = re.compile(r"(?:option|choice)\s*[:#]?\s*\(?([A-Ja-j])\)?", re.IGNORECASE)
# An option letter leading a longer answer: "(B) 42 apples", "B) 42", "b. 42", "option C because".
# A lower-case letter needs its ")", "." or ":" too: "a dog", "a lot" are words, not option A.
_OPTION_PREFIX_RE = re.compile(
    r"\(\s*(?P<p>[A-Ja-j])\s*\)(?=[\s.,:;]|$)"
    r"|(?P<bare>[A-Ja-j])(?:\)|[.:]\s)"
    r"|(?i:option|choice)\s*\(?(?P<kw>[A-Ja-j])\)?(?![\w])"
)

_ARTICLES = frozenset(("a", "an", "the"))


def normalize_answer(raw: str) -> Answer | None:
    """Canonicalise a short answer string (also used for short probe answers to sub-questions)."""
    if not isinstance(raw, str):
        return None
    raw = raw.strip()
    s = strip_wrappers(raw)
    if not s:
        return None
    answer = normalize_fast(raw, s) or option_prefix(raw, s)
    if answer is not None:
        return answer
    if looks_like_math(s):
        answer = normalize_math(raw, s)
        if answer is not None:
            return answer
    return normalize_text(raw, s)


def normalize_fast(raw: str, s: str) -> Answer | None:
    """Option letters, plain numbers and number words: everything that needs no sympy."""
    if not s:
        return None
    letter = _option_letter(s)
    if letter is not None:
        return Answer(raw=raw, normalized=letter, kind=AnswerKind.OPTION)
    # Before numbers: "2:30 pm" would otherwise read as 2 with unit "pm".
    if s[0].isdigit() and (":" in s or "m" in s.lower()):
        answer = time_answer(raw, s)
        if answer is not None:
            return answer
    value = parse_plain_number(s)
    if value is not None:
        return number_answer(raw, value)
    word = NUMBER_WORDS.get(s.lower())
    if word is not None:
        return number_answer(raw, Fraction(word))
    return None


def option_prefix(raw: str | None, s: str) -> Answer | None:
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


def time_answer(raw: str, s: str) -> Answer | None:
    normalized = canonical_time(s)
    return None if normalized is None else Answer(raw=raw, normalized=normalized, kind=AnswerKind.TIME)


def normalize_text(raw: str, s: str) -> Answer | None:
    lowered = re.sub(r"[-/_\u2013\u2014]", " ", s.lower())
    kept = "".join(ch for ch in lowered if ch.isalnum() or ch.isspace())
    words = [w for w in kept.split() if w not in _ARTICLES]
    if not words:
        return None
    normalized = " ".join(words)
    if normalized in NUMBER_WORDS:
        return number_answer(raw, Fraction(NUMBER_WORDS[normalized]))
    return Answer(raw=raw, normalized=normalized, kind=AnswerKind.TEXT)
