"""Tests of final-answer extraction, normalisation, equivalence and clustering."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from guard import answers
from guard.answers import (
    Answer,
    AnswerKind,
    answers_equivalent,
    cluster_answers,
    extract_answer,
    normalize_answer,
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


@pytest.mark.parametrize("raw", ["K", "(k)", "b", "AB"])
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

    monkeypatch.setattr(answers, "_math_parse", boom)
    monkeypatch.setattr(answers, "_math_float", boom)
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
        # Different kinds never match.
        ("B", "b", False),
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


def test_equivalent_numbers_share_normalized_form():
    forms = {_norm(raw).normalized for raw in ["0.75", "3/4", "\\frac{3}{4}", "6/8", "0.750", "\\dfrac{6}{8}"]}
    assert forms == {"0.75"}


def test_unparseable_latex_falls_back_to_string_comparison():
    a = Answer(raw="\\weird{", normalized="\\weird{", kind=MATH)
    b = Answer(raw="\\other{", normalized="\\other{", kind=MATH)
    assert answers_equivalent(a, Answer(raw="\\weird{ ", normalized="\\weird{", kind=MATH))
    assert not answers_equivalent(a, b)


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


def test_cluster_answers_compares_against_representatives_only(monkeypatch):
    calls = []
    real = answers.answers_equivalent

    def counting(a, b):
        calls.append((a.normalized, b.normalized))
        return real(a, b)

    monkeypatch.setattr(answers, "answers_equivalent", counting)
    items = [_norm(str(n % 3)) for n in range(30)]
    clusters = answers.cluster_answers(items)
    assert clusters == [list(range(k, 30, 3)) for k in range(3)]
    # Repeated answers reuse their cluster; only the 3 distinct answers are compared.
    assert len(calls) <= 3


# --------------------------------------------------------------------------------------------
# Worker threads: math-verify's SIGALRM timeouts must be disabled
# --------------------------------------------------------------------------------------------


def test_math_verify_works_from_worker_threads():
    # Start cold so that parsing happens in the worker threads, not from a main-thread cache.
    answers._math_parse.cache_clear()
    answers._math_float.cache_clear()
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
