"""Reading short probe answers."""

import pytest


@pytest.mark.parametrize(
    "raw, expected",
    [(" 12\n", "12"), (" 3 + 16 = 19.", "19"), (" 5 apples", "5 apples"), ("", ""), ("\n\n", ""), (" 7\nmore", "7")],
)
def test_short_probe_answer(raw, expected):
    from guard.probe import _short

    assert _short(raw) == expected


@pytest.mark.parametrize("style", ["fewshot", "chat"])
def test_probes_of_a_path_share_its_prefix(style):
    import os

    from guard.prompts import PromptBuilder, PromptStyle
    from tests.scripted_engine import ScriptedEngine

    builder = PromptBuilder(PromptStyle(style), ScriptedEngine().render_chat)
    path = "He has 7 + 5 = 12 apples.\nAnswer: 12"
    a = builder.probe_prompt("Tom has 7 apples and buys 5. How many?", path, "How many at first?").text
    b = builder.probe_prompt("Tom has 7 apples and buys 5. How many?", path, "How many bought?").text
    shared = os.path.commonprefix([a, b])
    # Everything up to the sub-question is shared, including the whole path text.
    assert path in shared
    assert a[len(shared):].startswith("at first") or "at first" in a[len(shared) - 10:]


def _probes(answers):
    """A ProbeOutcome for answers[k][i] with one distinct prompt per (k, i)."""
    from guard.engine import Prompt
    from guard.probe import ProbeOutcome

    prompts = [[Prompt(f"ctx k={k} i={i}") for i in range(len(row))] for k, row in enumerate(answers)]
    surface = [{a: a for a in row if a} for row in answers]
    return ProbeOutcome(prompts, [list(row) for row in answers], surface)


def _plan(answers, mode):
    from guard.prompts import PromptBuilder, PromptStyle
    from tests.scripted_engine import ScriptedEngine
    from guard.probe import plan_scoring

    return plan_scoring(PromptBuilder(PromptStyle.FEWSHOT, ScriptedEngine().render_chat), _probes(answers), mode)


def _scored(plan):
    """{(k, i): [candidates scored under path i's prompt for sub-question k]}."""
    out: dict[tuple[int, int], list[str]] = {}
    for k, i, cand in plan.index:
        out.setdefault((k, i), []).append(cand)
    return out


@pytest.mark.parametrize("mode", ["full", "contested", "hard"])
def test_unanimous_sub_question_is_never_scored(mode):
    from guard.params import ScoreMode

    plan = _plan([["7", "7", "7", ""]], ScoreMode(mode))
    assert plan.items == []
    assert plan.base == [[{"7": 1.0}] * 4]


def test_full_mode_scores_the_top_four_candidates_under_every_path():
    from guard.params import ScoreMode

    plan = _plan([["1", "2", "2", "3", "4", "5", "1", "2"]], ScoreMode.FULL)
    scored = _scored(plan)
    assert set(scored) == {(0, i) for i in range(8)}
    assert all(c == ["2", "1", "3", "4"] for c in scored.values())  # by count, ties in order of appearance
    assert len(plan.items) == 32
    # The continuation is the candidate between the style's prefix and suffix.
    assert plan.items[0].continuation == " 2\n" and plan.items[0].context.text == "ctx k=0 i=0"


def test_contested_mode_weighs_the_mode_against_each_paths_own_answer():
    from guard.params import ScoreMode

    plan = _plan([["5", "5", "3", "9", "", "5", "3", "8"]], ScoreMode.CONTESTED)
    scored = _scored(plan)
    # The mode (5) against the path's own answer; against the runner-up (3) when the path answered
    # the mode or nothing.
    assert scored == {
        (0, 0): ["5", "3"], (0, 1): ["5", "3"], (0, 2): ["5", "3"], (0, 3): ["5", "9"],
        (0, 4): ["5", "3"], (0, 5): ["5", "3"], (0, 6): ["5", "3"], (0, 7): ["5", "8"],
    }
    assert len(plan.items) == 16


@pytest.mark.parametrize(
    "row, scored",
    [
        (["5", "5", "5", "5", "5", "5", "3", "8"], False),  # 6 of 8 agree: left to hard agreement
        (["5", "5", "5", "5", "5", "3", "3", "8"], True),  # 5 of 8: contested
        (["5", "5", "5", "3"], False),  # 3 of 4
        (["5", "5", "3", "8"], True),  # 2 of 4, a strict mode: contested
        (["5", "5", "3", "3"], False),  # no strict mode: consistency reads nothing from it
    ],
)
def test_contested_mode_skips_sub_questions_most_paths_agree_on(row, scored):
    from guard.params import ScoreMode

    plan = _plan([row, ["1", "1", "2", "3"] * (len(row) // 4)], ScoreMode.CONTESTED)
    assert {k for k, _, _ in plan.index} == ({0, 1} if scored else {1})
    assert plan.base[0] == [None] * len(row)  # unscored: analyze_ars falls back to the hard answers


def test_hard_mode_scores_nothing():
    from guard.params import ScoreMode

    plan = _plan([["1", "2", "2", "3"], ["4", "4", "5", ""]], ScoreMode.HARD)
    assert plan.items == [] and plan.base == [[None] * 4, [None] * 4]
