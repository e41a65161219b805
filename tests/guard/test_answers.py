"""Tests of final-answer extraction, normalisation, equivalence and clustering."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from guard import answers
from guard.answers import (
    Answer,
    AnswerKind,
    answers_equivalent,
    cluster_answers,
    equivalence,
    extract_answer,
    normalize_answer,
    representative,
    symbolic,
)

NUMBER, OPTION, TEXT, MATH = AnswerKind.NUMBER, AnswerKind.OPTION, AnswerKind.TEXT, AnswerKind.MATH


def _norm(raw: str) -> Answer:
    answer = normalize_answer(raw)
    assert answer is not None, raw
    return answer


# --------------------------------------------------------------------------------------------
# extract_answer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, normalized, kind",
    [
        # Few-shot "Answer: N" line.
        ("Tom has 3 bags of 4 apples, so 3 * 4 = 12.\nAnswer: 12", "12", NUMBER),
        ("answer: 7", "7", NUMBER),
        # Chat phrasing.
        ("Adding them up, the answer is 12.", "12", NUMBER),
        ("So the final answer is 30 dollars.", "30", NUMBER),
        ("Final answer: 8", "8", NUMBER),
        ("The answer to the question is 42.", "42", NUMBER),
        ("The answer is therefore 12 apples.", "12", NUMBER),
        ("Answer: 3 + 4 = 7", "7", NUMBER),
        # Markdown bold around the marker and/or the answer.
        ("**Answer:** 12", "12", NUMBER),
        ("**Answer: 12**", "12", NUMBER),
        ("The answer is: **12 apples**.", "12", NUMBER),
        ("**Final Answer:**\n\n**42**", "42", NUMBER),
        # \boxed{...} with nested braces, and inside $...$.
        ("We get $\\boxed{\\frac{3}{4}}$.", "0.75", NUMBER),
        ("Thus \\boxed{1{,}234}", "1234", NUMBER),
        ("\\boxed{12 \\text{ apples}}", "12", NUMBER),
        ("\\boxed{90^\\circ}", "90", NUMBER),
        ("The final answer is $\\boxed{2\\pi}$. I hope it is correct.", "2*pi", MATH),
        # GSM8K "####" line.
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72", NUMBER),
        # Minerva style: the later "final answer is" wins over "Final Answer:".
        ("Final Answer: The final answer is $12$. I hope it is correct.", "12", NUMBER),
        # Fallback: the last number in the text.
        ("She had 5 apples and bought 7 more, so 12 in total.", "12", NUMBER),
        ("He paid $1,234 and then 5 more dollars", "5", NUMBER),
        ("Therefore x = \u22123", "-3", NUMBER),
    ],
)
def test_extract_answer_patterns(text, normalized, kind):
    answer = extract_answer(text)
    assert answer is not None
    assert (answer.normalized, answer.kind) == (normalized, kind)


@pytest.mark.parametrize(
    "text, normalized",
    [
        # The LAST explicit answer wins, whichever pattern it uses.
        ("Answer: 3\nWait, I made an error. The answer is 5.", "5"),
        ("\\boxed{3} ... on reflection the answer is 5", "5"),
        ("The answer is 5. Double-checking: \\boxed{6}", "6"),
        ("#### 4\nActually, Answer: 9", "9"),
        # An explicit marker beats a later stray number.
        ("Answer: 12\nThis took me 3 minutes.", "12"),
        # "the answer is correct" judges an earlier answer; it is not one.
        ("The answer is 12. Let me verify the answer is correct.", "12"),
        # Markdown "####" headings are not GSM8K answer lines.
        ("#### Step 1\nCompute 3 + 4 = 7\n#### Final Answer\n7 apples", "7"),
        # Truncated (unbalanced) \boxed{ is ignored; earlier explicit answer stands.
        ("Answer: 4. Now \\boxed{5", "4"),
    ],
)
def test_extract_answer_takes_last_explicit_answer(text, normalized):
    answer = extract_answer(text)
    assert answer is not None
    assert answer.normalized == normalized


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("3 * 4 = 12.\nAnswer: 12\n\nQuestion: Tom has 5 apples and eats 2. How many are left?\nAnswer: 3", "12"),
        ("The answer is 12.\nQuestion: What is 100 + 1?\n101", "12"),
        ("We add 5 and 7 to get 12.\n\n**Question:** How many legs do 3 dogs have?\n12 legs", "12"),
        # Fallback to the last number also stops at the continuation.
        ("5 + 7 = 12\nQuestion: what is 8 * 9? 72", "12"),
        # A leading "Question:" is the model restating its own question, not a continuation.
        ("Question: how many? Reasoning: 2 + 2 = 4.\nAnswer: 4", "4"),
    ],
)
def test_extract_answer_ignores_few_shot_continuation(text, normalized):
    answer = extract_answer(text)
    assert answer is not None
    assert answer.normalized == normalized


@pytest.mark.parametrize(
    "text, letter",
    [
        ("Answer: B", "B"),
        ("The correct answer is (B) because 3 * 4 = 12.", "B"),
        ("Answer: (b)", "B"),
        ("Answer: C) 42 apples", "C"),
        ("I compared them all. The answer is option D", "D"),
        ("The correct option is A.", "A"),
        ("\\boxed{\\text{(E)}}", "E"),
        ("So the answer is J.", "J"),
    ],
)
def test_extract_answer_options(text, letter):
    answer = extract_answer(text)
    assert answer is not None
    assert (answer.normalized, answer.kind) == (letter, OPTION)


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The capital of France is well known. The answer is Paris.", "paris"),
        ("Answer: The Eiffel Tower", "eiffel tower"),
        ("\\boxed{\\text{Mount Everest}}", "mount everest"),
        ("The answer is (K)", "k"),  # K is outside A-J: not an option letter
    ],
)
def test_extract_answer_text(text, normalized):
    answer = extract_answer(text)
    assert answer is not None
    assert (answer.normalized, answer.kind) == (normalized, TEXT)


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t", "I do not know how to solve this.", "The answer is", "Answer:\n\n", "Question: what is x?"],
)
def test_extract_answer_none(text):
    assert extract_answer(text) is None


@pytest.mark.parametrize(
    "text, normalized, kind_value",
    [
        # A number followed by its working: not implicit multiplication (16, 225).
        ("Answer: 4 (2+2)", "4", "number"),
        ("Answer: 15 (24 - 9)", "15", "number"),
        ("The answer is 15 (24 - 9) apples.", "15", "number"),
        ("So \\boxed{4 (2+2)}", "4", "number"),
        # Option letters, lower case included; ordinary words stay words.
        ("Answer: B) 42", "B", "option"),
        ("Answer: b) 42", "B", "option"),
        ("Answer: b", "B", "option"),
        ("Answer: a", "A", "option"),
        ("The answer is (a).", "A", "option"),
        ("Answer: a lot", "lot", "text"),
        ("The answer is a dog.", "dog", "text"),
        # A negated value is not the answer when a later value is given.
        ("The answer is not 5, it is 6", "6", "number"),
        ("The answer is not 5 but 6.", "6", "number"),
        ("Answer: not 5; it's 6", "6", "number"),
        ("The answer isn't 5, it's 6", "6", "number"),
        ("The answer is not Paris, it is London.", "london", "text"),
        ("The answer is 11, not 12.", "11", "number"),
        # Clock times stay times.
        ("Answer: 12:30", "12:30", "time"),
        ("Answer: 2:30 pm", "14:30", "time"),
        ("So she arrives at 2:30 pm.", "14:30", "time"),
        ("The shop closes at 9 p.m. sharp", "21:00", "time"),
        ("The meeting ends at 2:30 am", "02:30", "time"),
    ],
)
def test_extract_answer_issue_13_cases(text, normalized, kind_value):
    answer = extract_answer(text)
    assert answer is not None
    assert (answer.normalized, answer.kind.value) == (normalized, kind_value)


def test_repeated_negations_do_not_recurse():
    answer = extract_answer("The answer is " + "not 5, " * 3000 + "it is 6")
    assert answer is not None and answer.normalized == "6"


def test_negated_value_alone_is_not_the_answer():
    assert extract_answer("The answer is not 5.") is None
    # A negated phrase without a value is still a text answer.
    answer = extract_answer("Answer: Not enough information")
    assert answer is not None and (answer.normalized, answer.kind) == ("not enough information", TEXT)


@pytest.mark.parametrize(
    "text, normalized, unit",
    [
        ("Answer: 5 km", "5", "km"),
        ("So the answer is 5 km because it is far.", "5", "km"),
        ("She walked 10 hours in total", "10", "h"),
        ("He paid $1,234 and then 5 more dollars", "5", None),
        ("The speed is 5 km/h", "5", None),
        # A rate has no unit, also when a currency symbol leads it.
        ("So he earns $15 per hour.", "15", None),
        ("He paid $15 in all.", "15", "USD"),
        # The 2 of "^2" is an exponent, not the answer.
        ("The area is 12 cm^2.", "12", "cm^2"),
    ],
)
def test_extract_answer_keeps_unit(text, normalized, unit):
    answer = extract_answer(text)
    assert answer is not None and answer.kind is NUMBER
    assert (answer.normalized, answer.unit) == (normalized, unit)


def test_extract_answer_raw_is_what_the_model_wrote():
    answer = extract_answer("**Answer:** $1,234.50")
    assert answer == Answer(raw="$1,234.50", normalized="1234.5", kind=NUMBER)


# --------------------------------------------------------------------------------------------
# normalize_answer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("12", "12"),
        ("12.", "12"),
        ("+12", "12"),
        ("$1,234.50", "1234.5"),
        ("1,234,567", "1234567"),
        ("\\$5", "5"),
        ("€3.20", "3.2"),
        ("-3", "-3"),
        ("\u22123", "-3"),
        ("-$5", "-5"),
        ("-0", "0"),
        ("12 apples", "12"),
        ("5 km/h", "5"),
        ("60 mph", "60"),
        ("3 cm^2", "3"),
        ("12\\text{ cm}", "12"),
        ("50%", "50"),
        ("50\\%", "50"),
        ("12.5 percent", "12.5"),
        ("12.50", "12.5"),
        ("0.750", "0.75"),
        (".5", "0.5"),
        ("3/4", "0.75"),
        ("6/8", "0.75"),
        ("\\frac{3}{4}", "0.75"),
        ("\\dfrac{-1}{2}", "-0.5"),
        ("-\\frac{1}{2}", "-0.5"),
        ("\\frac34", "0.75"),
        ("1/3", "1/3"),
        ("-2/6", "-1/3"),
        ("2 1/2", "2.5"),
        ("1e3", "1000"),
        ("x = 5", "5"),
        ("twelve", "12"),
    ],
)
def test_normalize_plain_numbers(raw, normalized):
    answer = _norm(raw)
    assert (answer.normalized, answer.kind) == (normalized, NUMBER)
    assert answer.raw == raw


@pytest.mark.parametrize(
    "raw",
    # Words after the number that change its meaning must not be dropped as units.
    ["12 or 13", "5 more than x", "3 to 4"],
)
def test_numbers_followed_by_non_units_are_not_numbers(raw):
    assert _norm(raw).kind is not NUMBER


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("(B)", "B"),
        ("B)", "B"),
        ("B", "B"),
        ("B.", "B"),
        ("(c)", "C"),
        ("[D]", "D"),
        ("option C", "C"),
        ("Choice (a)", "A"),
        ("\\text{(E)}", "E"),
    ],
)
def test_normalize_options(raw, normalized):
    answer = _norm(raw)
    assert (answer.normalized, answer.kind) == (normalized, OPTION)


@pytest.mark.parametrize("raw", ["K", "(k)", "AB", "a dog", "a lot", "an apple", "Answer"])
def test_non_options(raw):
    assert _norm(raw).kind is not OPTION


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("Paris.", "paris"),
        ("  The Eiffel Tower ", "eiffel tower"),
        ("an apple a day", "apple day"),
        ("U.S.A.", "usa"),
        ("New-York", "new york"),
        ("**Blue**", "blue"),
        ("yes/no", "yes no"),
    ],
)
def test_normalize_text(raw, normalized):
    answer = _norm(raw)
    assert (answer.normalized, answer.kind) == (normalized, TEXT)


@pytest.mark.parametrize("raw", ["", "   ", "the", "...", "$$"])
def test_normalize_none(raw):
    assert normalize_answer(raw) is None


@pytest.mark.parametrize(
    "raw, normalized, kind",
    [
        ("\\sqrt{2}", "sqrt(2)", MATH),
        ("$\\sqrt{2}$", "sqrt(2)", MATH),
        ("x+1", "x + 1", MATH),
        ("1 + x", "x + 1", MATH),
        ("2\\pi", "2*pi", MATH),
        ("2x", "2*x", MATH),
        # Symbol-free expressions with a rational value become plain numbers.
        ("\\sqrt{4}", "2", NUMBER),
        ("2^{10}", "1024", NUMBER),
        ("1.5 \\times 10^{3}", "1500", NUMBER),
        ("\\sqrt{2}\\cdot\\sqrt{8}", "4", NUMBER),
    ],
)
def test_normalize_latex_via_math_verify(raw, normalized, kind):
    answer = _norm(raw)
    assert (answer.normalized, answer.kind) == (normalized, kind)


def test_huge_powers_are_not_expanded():
    # 9^(9^9) has ~370 million digits; building it exactly would hang the worker.
    answer = _norm("9^{9^{9}}")
    assert answer.kind is MATH
    assert len(answer.normalized) < 50


def test_plain_number_path_does_not_use_math_verify(monkeypatch):
    def boom(*_args, **_kwargs):
        raise AssertionError("math-verify called on the plain-number path")

    monkeypatch.setattr(symbolic, "math_parse", boom)
    monkeypatch.setattr(symbolic, "math_float", boom)
    assert _norm("$1,234.50").normalized == "1234.5"
    assert _norm("\\frac{3}{4}").normalized == "0.75"
    assert extract_answer("so 5 + 7 = 12.\nAnswer: 12 apples").normalized == "12"
    assert answers_equivalent(_norm("0.75"), _norm("3/4"))


# --------------------------------------------------------------------------------------------
# answers_equivalent
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("12.50", "12.5", True),
        ("12.5", "12", False),
        ("12", "12.0", True),
        ("0.75", "3/4", True),
        ("0.75", "\\frac{3}{4}", True),
        ("1/3", "0.333333", False),  # rationals compare exactly
        ("$1,234", "1234 dollars", True),
        ("-5", "5", False),
        ("50%", "50", True),
        ("(B)", "option B", True),
        ("B", "C", False),
        ("Paris.", "paris", True),
        ("The Eiffel Tower", "eiffel tower", True),
        ("Paris", "London", False),
        ("12", "twelve", True),
        # A lone lower-case letter is an option too.
        ("B", "b", True),
        # Different kinds never match.
        ("12", "x+12", False),
        # LaTeX via math-verify.
        ("x+1", "1+x", True),
        ("x+1", "x+2", False),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("2\\pi", "\\pi + \\pi", True),
        ("\\sqrt{2}", "\\sqrt{3}", False),
        ("\\sqrt{4}", "2", True),
        # Irrational vs decimal: relative tolerance 1e-6.
        ("\\sqrt{2}", "1.41421356", True),
        ("\\sqrt{2}", "1.414", False),
        ("\\pi", "3.14159265", True),
        ("\\pi", "3.14", False),
    ],
)
def test_answers_equivalent(a, b, expected):
    left, right = _norm(a), _norm(b)
    assert answers_equivalent(left, right) is expected
    assert answers_equivalent(right, left) is expected


# One table across answer forms: (a, b, equivalent). Each pair is checked in both orders.
EQUIVALENCE_TABLE = [
    # Integers, decimals, negatives, thousands separators.
    ("12", "12", True),
    ("12", "12.0", True),
    ("12.50", "12.5", True),
    ("12.5", "12", False),
    ("-5", "5", False),
    ("-5", "\u22125", True),
    ("-12.5", "-25/2", True),
    ("1,200", "1200", True),
    ("1,200", "1.2", False),
    ("1,234,567", "1234567", True),
    ("1e3", "1000", True),
    ("0.7", ".7", True),
    ("7", ".7", False),
    ("twelve", "12", True),
    # Fractions.
    ("0.1", "1/10", True),
    ("1/3", "0.333", False),
    ("2/4", "\\frac{1}{2}", True),
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac{1}{2}", "\\dfrac12", True),
    ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ("-\\frac{1}{2}", "-0.5", True),
    ("2 1/2", "2.5", True),
    # LaTeX wrappers and expressions.
    ("\\boxed{12}", "12", True),
    ("\\boxed{12}", "13", False),
    ("$\\boxed{\\frac{3}{4}}$", "0.75", True),
    ("\\sqrt{4}", "2", True),
    ("x+1", "1+x", True),
    ("\\pi", "3.14", False),
    # Percentages keep their number.
    ("50%", "50", True),
    ("50%", "50 percent", True),
    ("50\\%", "50%", True),
    ("12.5%", "12.5", True),
    ("50%", "0.5", False),
    ("50%", "$50", False),
    # Money.
    ("$5", "5", True),
    ("5 dollars", "5", True),
    ("$5", "5 dollars", True),
    ("$5.00", "5", True),
    ("$1,234.50", "1234.5", True),
    ("-$5", "-5", True),
    ("$5", "$6", False),
    ("$5", "5 cents", False),
    ("\u20ac5", "$5", False),
    # Units: a bare number matches any unit; two known units must be the same unit.
    ("5", "5 km", True),
    ("5 km", "5 m", False),
    ("5 km", "5 kilometers", True),
    ("5 km", "5 kilometres", True),
    ("5 km", "5000 m", False),  # no unit conversion
    ("5 m", "6 m", False),
    ("10 hours", "10 minutes", False),
    ("10 hours", "10 hrs", True),
    ("10 hours", "10 h", True),
    ("10 hrs", "10 h", True),
    ("10 min", "10 minutes", True),
    ("30 seconds", "30 s", True),
    ("30 s", "30 min", False),
    ("2 weeks", "14 days", False),
    ("3 kg", "3 kilograms", True),
    ("3 kg", "3 g", False),
    ("2 l", "2 liters", True),
    ("2 L", "2 ml", False),
    ("12\\text{ cm}", "12 cm", True),
    ("12\\text{ cm}", "12 mm", False),
    ("3 cm^2", "3 square centimeters", True),
    ("3 cm^2", "3 cm", False),
    ("12 apples", "12", True),  # unknown words are no unit
    ("60 mph", "60", True),
    # A number followed by its working in brackets is the number.
    ("4 (2+2)", "4", True),
    ("4 (2+2)", "16", False),
    ("15 (24 - 9)", "15", True),
    ("15 (24 - 9)", "225", False),
    # Clock times.
    ("12:30", "12:30", True),
    ("12:30", "1230", False),
    ("2:30 pm", "14:30", True),
    ("2:30 am", "14:30", False),
    ("2:30 am", "2:30", True),
    ("2:30 PM", "2:30 p.m.", True),
    ("12:00 pm", "12:00", True),
    ("12:15 am", "00:15", True),
    ("2 pm", "14:00", True),
    ("9:05", "9:50", False),
    ("14:30", "2.5", False),
    # Option letters.
    ("B", "b", True),
    ("(B)", "option B", True),
    ("B) 42", "B", True),
    ("b)", "(B)", True),
    ("a", "A", True),
    ("A", "B", False),
    ("B) 42", "42", False),
    ("a dog", "A", False),
    # Yes / no and text.
    ("Yes", "yes", True),
    ("yes.", "Yes", True),
    ("**No**", "no", True),
    ("yes", "no", False),
    ("Paris", "London", False),
]


@pytest.mark.parametrize("a, b, expected", EQUIVALENCE_TABLE)
def test_equivalence_table(a, b, expected):
    left, right = _norm(a), _norm(b)
    assert answers_equivalent(left, right) is expected
    assert answers_equivalent(right, left) is expected


def test_equivalence_table_is_large():
    assert len(EQUIVALENCE_TABLE) >= 60
    assert {expected for _, _, expected in EQUIVALENCE_TABLE} == {True, False}


def test_equivalent_numbers_share_normalized_form():
    forms = {_norm(raw).normalized for raw in ["0.75", "3/4", "\\frac{3}{4}", "6/8", "0.750", "\\dfrac{6}{8}"]}
    assert forms == {"0.75"}


def test_unparseable_latex_falls_back_to_string_comparison():
    a = Answer(raw="\\weird{", normalized="\\weird{", kind=MATH)
    b = Answer(raw="\\other{", normalized="\\other{", kind=MATH)
    assert answers_equivalent(a, Answer(raw="\\weird{ ", normalized="\\weird{", kind=MATH))
    assert not answers_equivalent(a, b)


@pytest.mark.parametrize(
    "raw, normalized, kind_value",
    [
        ("B) 42", "B", "option"),
        ("b) 42", "B", "option"),
        ("b", "B", "option"),
        ("(b)", "B", "option"),
        ("b)", "B", "option"),
        ("b.", "B", "option"),
        ("a", "A", "option"),
        ("a dog", "dog", "text"),
        ("4 (2+2)", "4", "number"),
        ("15 (24 - 9)", "15", "number"),
        ("12:30", "12:30", "time"),
        ("2:30 pm", "14:30", "time"),
        ("2:30 a.m.", "02:30", "time"),
        ("12:05 AM", "00:05", "time"),
        ("7 pm", "19:00", "time"),
        ("23:59:30", "23:59:30", "time"),
    ],
)
def test_normalize_issue_13_cases(raw, normalized, kind_value):
    answer = _norm(raw)
    assert (answer.normalized, answer.kind.value) == (normalized, kind_value)


@pytest.mark.parametrize("raw", ["25:00", "12:60", "13:00 pm"])
def test_impossible_clock_times_are_not_times(raw):
    assert _norm(raw).kind.value != "time"


@pytest.mark.parametrize(
    "raw, unit",
    [
        ("5", None),
        ("5 km", "km"),
        ("5 kilometres", "km"),
        ("10 hrs", "h"),
        ("$5", "USD"),
        ("5 dollars", "USD"),
        ("-$5", "USD"),
        ("50%", "%"),
        ("12.5 percent", "%"),
        ("12\\text{ cm}", "cm"),
        ("3 cm^2", "cm^2"),
        ("12 apples", None),
        ("5 km/h", None),  # rates are out of scope: no unit rather than the wrong one
        ("$5 per hour", None),
        ("5 pounds", None),  # mass or money
        ("x = 5 km", "km"),
        ("5 km (2 + 3)", "km"),
        ("twelve", None),
    ],
)
def test_number_units(raw, unit):
    answer = _norm(raw)
    assert answer.kind is NUMBER
    assert answer.unit == unit


def test_unit_survives_rebuilding_from_stored_triple():
    # guard/replay.py stores (raw, normalized, kind) and rebuilds Answers positionally.
    stored = _norm("5 km")
    rebuilt = Answer(stored.raw, stored.normalized, stored.kind)
    assert rebuilt == stored and rebuilt.unit == "km"
    assert not answers_equivalent(rebuilt, _norm("5 m"))


# --------------------------------------------------------------------------------------------
# cluster_answers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raws, expected",
    [
        ([], []),
        ([None, None], []),
        (["12"], [[0]]),
        (["12", "12.0", "$12", "13"], [[0, 1, 2], [3]]),
        (["13", None, "12", "13", None, "12 apples"], [[0, 3], [2, 5]]),
        (["0.75", "B", "3/4", "(B)", "\\frac{3}{4}", "paris"], [[0, 2, 4], [1, 3], [5]]),
        (["x+1", "1+x", "\\sqrt{2}", "1.41421356", "x + 1"], [[0, 1, 4], [2, 3]]),
    ],
)
def test_cluster_answers(raws, expected):
    items = [None if raw is None else _norm(raw) for raw in raws]
    assert cluster_answers(items) == expected


@pytest.mark.parametrize(
    "raws, expected",
    [
        (["5 km", "5 m", "5 kilometers", "5"], [[0, 2, 3], [1]]),
        # A bare number joins the unit more paths gave, whichever came first; it never merges km and m.
        (["5", "5 km", "5 m", "5 km"], [[0, 1, 3], [2]]),
        (["5", "5 m", "5 km", "5 km"], [[0, 2, 3], [1]]),
        # Two units with as many paths each: the bare number could be either, so it stands alone.
        (["5", "5 km", "5 m", "5 km", "5 m"], [[0], [1, 3], [2, 4]]),
        (["5 m", "5 km", "5", "5 m", "5 km"], [[0, 3], [1, 4], [2]]),
        (["12:30", "1230", "12:30 pm", "2:30 pm", "14:30"], [[0, 2], [1], [3, 4]]),
        (["b", "B) 42", "42", "(B)"], [[0, 1, 3], [2]]),
    ],
)
def test_cluster_answers_issue_13(raws, expected):
    assert cluster_answers([_norm(raw) for raw in raws]) == expected


@pytest.mark.parametrize(
    "raws, expected",
    [
        # A unit names the cluster over a bare number, then the most common answer, whatever the order.
        (["5", "5 km", "5"], "5 km"),
        (["5 km", "5", "5"], "5 km"),
        (["\\sqrt{2}", "1.41421356", "1.41421356"], "1.41421356"),
        (["1.41421356", "\\sqrt{2}", "1.41421356"], "1.41421356"),
        # Equal answers: the smallest spelling.
        (["3/4", "0.75"], "0.75"),
        (["5 kilometers", "5 km"], "5 kilometers"),
        (["5 km", "5 kilometers"], "5 kilometers"),
    ],
)
def test_representative_does_not_depend_on_path_order(raws, expected):
    items = [_norm(raw) for raw in raws]
    (cluster,) = cluster_answers(items)
    assert items[representative(items, cluster)].raw == expected


def test_cluster_answers_compares_against_representatives_only(monkeypatch):
    calls = []
    real = equivalence.answers_equivalent

    def counting(a, b):
        calls.append((a.normalized, b.normalized))
        return real(a, b)

    monkeypatch.setattr(equivalence, "answers_equivalent", counting)
    items = [_norm(str(n % 3)) for n in range(30)]
    clusters = equivalence.cluster_answers(items)
    assert clusters == [list(range(k, 30, 3)) for k in range(3)]
    # Repeated answers reuse their cluster; only the 3 distinct answers are compared.
    assert len(calls) <= 3


# --------------------------------------------------------------------------------------------
# Worker threads: math-verify's SIGALRM timeouts must be disabled
# --------------------------------------------------------------------------------------------


def test_math_verify_works_from_worker_threads():
    # Start cold so that parsing happens in the worker threads, not from a main-thread cache.
    symbolic.math_parse.cache_clear()
    symbolic.math_float.cache_clear()
    texts = [
        "So the result is \\boxed{\\frac{\\sqrt{3}}{3}}.",
        "The answer is $\\frac{1}{\\sqrt{3}}$.",
        "Final answer: \\boxed{y^2 + 2y}",
        "**Answer:** $y(y+2)$",
        "The answer is 12.",
    ]

    def work(text):
        answer = extract_answer(text)
        return threading.current_thread() is threading.main_thread(), answer

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, texts))
        extracted = [answer for _, answer in results]
        same_root = pool.submit(answers_equivalent, extracted[0], extracted[1]).result()
        same_poly = pool.submit(answers_equivalent, extracted[2], extracted[3]).result()
        different = pool.submit(answers_equivalent, extracted[0], extracted[2]).result()
        clusters = pool.submit(cluster_answers, extracted).result()

    assert not any(in_main for in_main, _ in results)
    assert [a.kind for a in extracted] == [MATH, MATH, MATH, MATH, NUMBER]
    assert extracted[0].normalized == "sqrt(3)/3"
    assert same_root and same_poly and not different
    assert clusters == [[0, 1], [2, 3], [4]]


# -- a path's working and the values it wrote ------------------------------------------------------

MUFFINS = " He has 24 - 9 = 15 muffins left after selling. Then he has 15 + 6 = 21 muffins.\nAnswer: 21"


@pytest.mark.parametrize(
    "text, working",
    [
        (MUFFINS, MUFFINS.removesuffix("Answer: 21")),
        (" 3 + 4 = 7.\nAnswer: 7\n\nQuestion: Next one?", " 3 + 4 = 7.\n"),  # and anything after it
        (" 15 + 6 = 21. Answer: 21", " 15 + 6 = 21."),  # working on the answer's own line stays
        ("So 5 + 7 = 12 apples.\nSo the answer is 12.", "So 5 + 7 = 12 apples.\n"),  # only words before it
        ("7 + 5 = 12\n**Final Answer:**\n12", "7 + 5 = 12\n"),
        ("7 + 5 = 12, so \\boxed{12}", "7 + 5 = 12, so"),
        ("7 + 5 = 12\n#### 12", "7 + 5 = 12\n"),
        ("Answer: 12", ""),
        (" He has 7 + 5 = 12.", " He has 7 + 5 = 12."),  # no answer statement: all of it
        (" He has 12.\nQuestion: Ann has 3 pens?", " He has 12.\n"),  # not the invented next exemplar
        ("", ""),
    ],
    ids=["answer-line", "after-it", "same-line", "answer-is", "final-answer-heading", "boxed", "hashes",
         "only-answer", "no-statement", "invented-exemplar", "empty"],
)
def test_working_text_is_the_path_before_its_answer_statement(text, working):
    assert answers.working_text(text) == working
    assert text.startswith(working)  # a prefix: a probe built on it continues the path's tokens


@pytest.mark.parametrize(
    "text, values",
    [
        (MUFFINS, ["24", "9", "15", "6", "21"]),
        (" 3 + 4 = 7.\nAnswer: 7", ["3", "4", "7"]),
        (" 3 + 4 = 8.\nAnswer: 7", ["3", "4", "8"]),  # the answer line is not working
        (" It was -5 degrees and rose 8: -5 + 8 = 3.\nAnswer: 3", ["-5", "8", "3"]),  # a sign, not an operator
        (" 10 - -2 = 12", ["10", "-2", "12"]),
        (" He pays $3.50 for 1,200 g, 1/4 of it at 2:30 pm.\nAnswer: 3.5", ["3.5", "1200", "0.25", "14:30"]),
        (" Half of twelve is six.\nAnswer: 6", []),  # number words are prose, not written values
        (" 2 + 2 = 4 and 4 * 2 = 8.\nAnswer: 8", ["2", "4", "8"]),  # distinct, in order of first appearance
        (" No numbers here.", []),
    ],
    ids=["muffins", "one-step", "wrong-step", "negative", "minus-negative", "units-time", "words", "distinct",
         "none"],
)
def test_path_values_are_the_values_written_in_the_working(text, values):
    assert answers.path_values(text) == values


def test_import_configures_no_logging():
    # A library must leave logging alone on import; math-verify's logger is quietened at first use.
    code = (
        "import logging, guard.answers as a; "
        "assert logging.getLogger('math_verify').level == logging.NOTSET; "
        "a.normalize_answer('\\\\sqrt{2}'); "
        "assert logging.getLogger('math_verify').level == logging.ERROR"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
