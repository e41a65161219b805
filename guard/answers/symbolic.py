"""LaTeX and sympy answers through math-verify: recognising, parsing, evaluating and comparing them."""

from __future__ import annotations

import functools
import logging
import math
import re
from fractions import Fraction
from typing import Any

from guard.answers.answer import Answer, AnswerKind, number_answer
from guard.answers.wrappers import strip_wrappers

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

_FLOAT_REL_TOL = 1e-6
# Sub-expressions beyond these magnitudes would make sympy build astronomically large integers.
_MAX_MAGNITUDE = 1e300
# Well below the 4300 digits int <-> str refuses to convert.
_MAX_EXACT_BITS = 4000


def looks_like_math(s: str) -> bool:
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


def normalize_math(raw: str, s: str) -> Answer | None:
    expr = _first_expr(math_parse(s))
    if expr is None:
        if "\\" not in s:
            return None
        return Answer(raw=raw, normalized=re.sub(r"\s+", "", s), kind=AnswerKind.MATH)
    value = _exact_value(expr)
    if value is not None:
        return number_answer(raw, value)
    try:
        normalized = str(expr)
    except Exception:
        normalized = re.sub(r"\s+", "", s)
    return Answer(raw=raw, normalized=normalized, kind=AnswerKind.MATH)


@functools.cache
def _math_verify() -> Any:
    """The math_verify module, imported on first use (it pulls in sympy and latex2sympy2)."""
    import math_verify

    # math-verify logs a warning on every call made with its (signal-based) timeout disabled; we
    # disable it on purpose (see math_parse), so the warning is noise. Set here, at first use and on
    # that logger only, rather than on import: importing guard configures no logging.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


@functools.lru_cache(maxsize=4096)
def math_parse(s: str) -> tuple[Any, ...]:
    try:
        parse = _math_verify().parse
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
def math_float(s: str) -> float | None:
    try:
        import sympy

        expr = _first_expr(math_parse(s))
        if not isinstance(expr, sympy.Expr) or expr.free_symbols:
            return None
        approx = complex(expr.evalf(20))
    except Exception:
        return None
    if approx.imag != 0 or not math.isfinite(approx.real):
        return None
    return approx.real


def math_equivalent(a: Answer, b: Answer) -> bool:
    parsed_a = math_parse(strip_wrappers(a.raw))
    parsed_b = math_parse(strip_wrappers(b.raw))
    if _first_expr(parsed_a) is None or _first_expr(parsed_b) is None:
        # Unparseable LaTeX: the (already unequal) normalized strings are all we can compare.
        return False
    try:
        verify = _math_verify().verify
        # verify() is not symmetric (assignments, intervals); votes must not depend on order.
        # timeout_seconds=None for the same SIGALRM reason as in math_parse.
        return bool(
            verify(list(parsed_a), list(parsed_b), timeout_seconds=None)
            or verify(list(parsed_b), list(parsed_a), timeout_seconds=None)
        )
    except Exception:
        return False


def matches_number(expr: Answer, value: Fraction) -> bool:
    """Whether a numeric MATH answer approximately equals `value`."""
    approx = math_float(strip_wrappers(expr.raw))
    if approx is None:
        return False
    # A MATH answer that is numeric is irrational (rationals become NUMBER), so only an
    # approximate comparison can ever match it.
    return math.isclose(float(value), approx, rel_tol=_FLOAT_REL_TOL)
