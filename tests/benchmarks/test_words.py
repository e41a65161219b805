"""Synthetic word problems: every step re-evaluated, numbers traced to the text, no sub-question echoes the question."""

import ast
import re
from fractions import Fraction

import pytest

from benchmarks import datasets, quality, words
from guard.consistency import restates
from guard.params import GuardParams

# Numbers the text may give as words; anything else must be written as digits.
NUMBER_WORDS = {"twice": 2}
RESTATEMENT_JACCARD = 0.8


@pytest.fixture(scope="module")
def problems() -> list[words.WordProblem]:
    # The default dataset as quality.py sees it, plus each step count under another seed.
    return words.generate() + [p for n in range(1, 5) for p in words.generate(60, seed=1, num_steps=n)]


def exact_value(expression: str) -> Fraction:
    """Independent of the generator's evaluator: exact rational arithmetic over a whitelisted tree."""
    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, ast.Div) and right:
                return left / right
        raise AssertionError(f"{expression!r}: {ast.dump(node)} is not integer arithmetic")

    return walk(ast.parse(expression, mode="eval").body)


def numbers_in(expression: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", expression)]


def text_numbers(text: str) -> set[int]:
    found = {int(n) for n in re.findall(r"\d+", text)}
    spelled = {v for word, v in NUMBER_WORDS.items() if re.search(rf"\b{word}\b", text, re.IGNORECASE)}
    return found | spelled


def word_set(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def last_sentence(text: str) -> str:
    return re.split(r"(?<=[.?!])\s+", text.strip())[-1]


# -- values ---------------------------------------------------------------------------------------


def test_every_step_expression_re_evaluates_to_its_value(problems):
    for p in problems:
        values = [exact_value(s.expression) for s in p.steps]
        assert all(v.denominator == 1 and 0 < v < words.MAX_VALUE for v in values), (p.id, p.steps)
        assert [s.value for s in p.steps] == values, p.id
        assert p.sub_answers == tuple(str(int(v)) for v in values[:-1]), p.id
        assert p.answer == values[-1] and p.to_problem().answer == str(int(values[-1])), p.id


def test_each_step_uses_only_numbers_from_the_text_or_earlier_steps(problems):
    for p in problems:
        known = text_numbers(p.question)
        for k, step in enumerate(p.steps):
            used = set(numbers_in(step.expression))
            assert used <= known, (p.id, k, step.expression, sorted(known))
            known.add(step.value)


def test_an_intermediate_value_is_never_the_answer(problems):
    # Else a path's own final answer would match the gold value and the guard would call it an echo.
    for p in problems:
        assert str(p.answer) not in p.sub_answers, p.id


# -- sub-questions --------------------------------------------------------------------------------


def test_sub_questions_are_the_intermediate_steps_and_never_restate_the_question(problems):
    for p in problems:
        assert len(p.sub_questions) == len(p.steps) - 1, p.id
        asked = last_sentence(p.question)
        assert asked.endswith("?") and asked.startswith(("How", "What")), p.id
        for sub in p.sub_questions:
            assert sub.endswith("?") and sub.startswith(("How", "What")), (p.id, sub)
            a, b = word_set(sub), word_set(asked)
            assert len(a & b) / len(a | b) < RESTATEMENT_JACCARD, (p.id, sub, asked)
            assert not restates(sub, p.question), (p.id, sub)  # the guard's own echo check, every sentence
        assert len(set(p.sub_questions)) == len(p.sub_questions), p.id


def test_templates_are_filled_in(problems):
    for p in problems:
        for text in (p.question, *p.sub_questions):
            assert "{" not in text and "}" not in text and "  " not in text, (p.id, text)
            assert text[0].isupper() or text[0].isdigit(), (p.id, text)


def test_one_step_problems_have_no_sub_questions():
    # The only other quantities of a one-step problem are in its text (see the module docstring).
    assert all(p.sub_questions == () for p in words.generate(20, num_steps=1))


# -- variety and determinism ----------------------------------------------------------------------


def test_twenty_shapes_and_every_step_count_in_the_first_200(problems):
    first = problems[:200]
    assert len({p.shape for p in first}) >= 20
    assert {len(p.steps) for p in first} == {1, 2, 3, 4}
    assert len(words.SHAPES) == len({s.name for s in words.SHAPES}) >= 20
    assert {s.num_steps for s in words.SHAPES} == {1, 2, 3, 4}
    operators = {op for p in first for s in p.steps for op in "+-*/" if f" {op} " in s.expression}
    assert operators == {"+", "-", "*", "/"}


def test_names_objects_and_numbers_vary(problems):
    first = problems[:200]
    assert len({p.question.split()[0] for p in first}) >= 10
    assert len({p.answer for p in first}) >= 80
    for shape in words.SHAPES:
        questions = [p.question for p in problems if p.shape == shape.name]
        assert len(set(questions)) == len(questions) >= 8, shape.name


def test_same_seed_same_problems_a_limit_is_a_prefix_and_another_seed_differs():
    first, again = words.generate(40, seed=5), words.generate(70, seed=5)[:40]
    assert first == again
    other = words.generate(40, seed=6)
    assert sum(a.question == b.question for a, b in zip(first, other)) == 0
    assert [a.shape for a in first] == [b.shape for b in other]  # shapes in turn, whatever the seed
    assert len({p.id for p in first + other}) == 80


@pytest.mark.parametrize("num_steps", [1, 2, 3, 4])
def test_an_n_step_set_has_only_n_step_problems(num_steps):
    generated = words.generate(25, seed=2, num_steps=num_steps)
    assert {len(p.steps) for p in generated} == {num_steps}
    assert {p.shape for p in generated} == {s.name for s in words.shapes_with(num_steps)}


# -- the evaluator --------------------------------------------------------------------------------


@pytest.mark.parametrize("expression, value", [("12 + 7", 19), ("(12 + 18) - 6", 24), ("24 / 4", 6),
                                               ("3 * 12 + 4 * 8", 68)])
def test_the_evaluator_computes_integer_arithmetic(expression, value):
    assert words.evaluate(expression) == value


@pytest.mark.parametrize("expression", ["7 / 2", "4 / 0", "2 ** 3", "1.5 + 1", "-3", "__import__('os')",
                                        "x + 1", "1 +", "[1][0]"])
def test_the_evaluator_refuses_anything_else(expression):
    with pytest.raises(ValueError, match=re.escape(repr(expression))):
        words.evaluate(expression)


# -- as a dataset ---------------------------------------------------------------------------------


def test_words_gold_loads_through_quality_with_the_gold_ars():
    name, ars = quality.parse_spec("words:gold")
    assert (name, ars) == ("words", "gold")
    loaded = datasets.load(name, limit=12)
    assert [p.id for p in loaded] == [f"words-s0-{i:04d}" for i in range(12)]
    everything = datasets.load(name)
    assert len(everything) == words.DEFAULT_COUNT and everything[:12] == loaded
    for p in everything:
        subs, values = quality.gold_ars(p)
        assert (subs, values) == (p.sub_questions, p.sub_answers) and not p.images
        GuardParams(question=p.question, sub_questions=subs)


def test_step_and_seed_names_resolve():
    three = datasets.load("words-3step@7", limit=5)
    assert [p.id for p in three] == [f"words-3step-s7-{i:04d}" for i in range(5)]
    assert all(len(p.sub_questions) == 2 for p in three)
    assert datasets.load("words@7", limit=3) == [p.to_problem() for p in words.generate(3, seed=7)]
    assert len(datasets.load("words-1step", limit=4)) == 4


@pytest.mark.parametrize("name", ["words-5step", "words-0step", "words@x", "words-2steps", "words-2step@"])
def test_a_bad_generated_name_is_refused_with_the_name(name):
    with pytest.raises(ValueError, match=re.escape(name)):
        datasets.load(name)


def test_the_command_prints_problems_with_steps_and_values(capsys):
    assert words.main(["--count", "3", "--seed", "4", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    for p in words.generate(3, seed=4, num_steps=3):
        assert p.question in out and f"answer: {p.answer}" in out
        for step in p.steps:
            assert f"[{step.expression}]" in out
        for sub, value in zip(p.sub_questions, p.sub_answers):
            assert f"{sub}  -> {value}" in out
