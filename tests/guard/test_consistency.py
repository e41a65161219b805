"""TRACE metrics on hand-built probe answers: strict modes, missing answers, echoes, support and FFS."""

import pytest

from guard.consistency import analyze_ars, restates, strict_mode

SUBS = ["s1", "s2", "s3"]


@pytest.mark.parametrize(
    "answers, modal, agreement, answered",
    [
        ([["5", "5", "5", "5"]], ["5"], [1.0], [4]),
        ([["5", "5", "6", "7"]], ["5"], [0.5], [4]),
        # One answer is no agreement: nothing to agree with.
        ([["5", "", "", ""]], [""], [0.0], [1]),
        ([["", "", "", ""]], [""], [0.0], [0]),
        # A tie has no mode (it used to go to the answer seen first), whatever the path order.
        ([["6", "5", "5", "6"]], [""], [0.5], [4]),
        ([["5", "6", "6", "5"]], [""], [0.5], [4]),
        # Missing answers leave the denominator: 3 of the 3 that answered.
        ([["5", "5", "", "5"]], ["5"], [1.0], [3]),
        # Eight different values: agreement 1/8, no mode.
        ([[str(v) for v in range(8)]], [""], [0.125], [8]),
    ],
)
def test_strict_mode_and_agreement_among_answered(answers, modal, agreement, answered):
    result = analyze_ars(["s1"], answers)
    assert result.modal == modal
    assert result.agreement == pytest.approx(agreement)
    assert result.answered == answered
    # Without soft scores, soft agreement is the hard agreement.
    assert result.soft_agreement == pytest.approx(agreement)


@pytest.mark.parametrize("answers, expected", [(["a", "b", "b"], ("b", 2)), (["a", "b"], ("", 1)), ([], ("", 0))])
def test_strict_mode(answers, expected):
    assert strict_mode(answers) == expected


def test_support_is_the_unweighted_share_of_informative_steps_matched():
    answers = [
        ["1", "1", "1", "1"],  # mode 1
        ["2", "2", "3", "3"],  # tie: no mode, says nothing about anyone
        ["4", "9", "9", "9"],  # mode 9
    ]
    r = analyze_ars(SUBS, answers)
    assert r.support == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_a_step_all_paths_disagree_on_weighs_as_much_as_an_agreed_one():
    # Before: support weighted each step by its agreement, so a 5-3 step counted little next to a 8-0 one.
    answers = [["1"] * 8, ["2"] * 5 + ["3"] * 3]
    r = analyze_ars(["s1", "s2"], answers)
    assert r.support[5] == pytest.approx(0.5) and r.support[0] == pytest.approx(1.0)


def test_missing_answers_are_missing_not_disagreement():
    # Path 3 could not answer s1: its support and FFS come from s2 alone.
    answers = [["7", "7", "7", ""], ["5", "5", "5", "5"]]
    r = analyze_ars(["s1", "s2"], answers)
    assert r.support == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert r.first_failure_step == [None, None, None, None]
    assert r.agreement == pytest.approx([1.0, 1.0]) and r.answered == [3, 4]
    # A path that answered nothing has no support of its own.
    r = analyze_ars(["s1"], [["7", "7", ""]])
    assert r.support == [1.0, 1.0, None] and r.filled_support() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "answers, threshold, expected",
    [
        # Path 2 departs at s2 (a=0.75 > 0.5); path 3 departs at s1.
        ([["1", "1", "1", "7"], ["2", "2", "8", "2"], ["3", "3", "3", "3"]], 0.5, [None, None, 2, 1]),
        # A departure from a weak mode (a=0.5, not above 0.6) is not a failure step.
        ([["1", "1", "1", "1"], ["2", "2", "3", "4"], ["4", "4", "4", "5"]], 0.6, [None, None, None, 3]),
        # An even split is no mode to fail against, even at threshold 0.5.
        ([["1", "1", "2", "2"]], 0.5, [None, None, None, None]),
        # Exactly half on the mode is not above 0.5.
        ([["1", "1", "2", "3"]], 0.5, [None, None, None, None]),
        # Unanswered is not departing.
        ([["1", "", "1", "1"]], 0.5, [None, None, None, None]),
    ],
)
def test_first_failure_step(answers, threshold, expected):
    subs = [f"s{k}" for k in range(len(answers))]
    assert analyze_ars(subs, answers, ffs_threshold=threshold).first_failure_step == expected


def test_soft_scores_replace_hard_matches():
    answers = [["5", "5", "5", "6"]]
    soft = [[{"5": 0.9, "6": 0.1}, {"5": 0.8, "6": 0.2}, {"5": 0.6, "6": 0.4}, {"5": 0.1, "6": 0.9}]]
    r = analyze_ars(["s1"], answers, soft)
    assert r.modal == ["5"]
    assert r.agreement == [0.75]
    assert r.soft_agreement[0] == pytest.approx((0.9 + 0.8 + 0.6 + 0.1) / 4)
    # Path 3 answered "6" but puts 0.1 on "5": its support counts that mass, while the FFS follows
    # the answer it actually gave.
    assert r.support[2] == pytest.approx(0.6)
    assert r.support[3] == pytest.approx(0.1)
    assert r.first_failure_step == [None, None, None, 1]


@pytest.mark.parametrize(
    "sub_question, answers, finals, echo",
    [
        # Every path answers the sub-question with its own final answer: an echo.
        ("How many are left after selling?", ["21", "21", "21", "20"], ["21", "21", "21", "20"], True),
        # Intermediate values that differ from the final answers: informative.
        ("How many are left after selling?", ["15", "15", "15", "14"], ["21", "21", "21", "20"], False),
        # Half is not most.
        ("How many are left after selling?", ["21", "21", "15", "15"], ["21", "21", "21", "21"], False),
        # Restating the question is an echo whatever the answers.
        ("How many apples does Tom have now?", ["7", "7", "7", "7"], ["12", "12", "12", "12"], True),
    ],
)
def test_echo_sub_questions_are_left_out(sub_question, answers, finals, echo):
    question = "Tom has 7 apples and buys 5 more. How many apples does Tom have now?"
    r = analyze_ars([sub_question], [answers], final_answers=finals, question=question)
    assert r.echo == [echo]
    if echo:
        # An echo backs or contradicts no path: no support, no FFS.
        assert r.support == [None] * 4 and r.first_failure_step == [None] * 4 and not r.informative
        assert r.agreement_among([0, 1, 2, 3]) is None


@pytest.mark.parametrize(
    "sub_question, restated",
    [
        ("How many apples does Tom have now?", True),
        ("How many apples does tom have now", True),
        ("How many apples does Tom have at the start?", False),
        ("How many apples did Tom buy?", False),
        ("", False),
    ],
)
def test_restates(sub_question, restated):
    assert restates(sub_question, "Tom has 7 apples and buys 5 more. How many apples does Tom have now?") is restated


def test_silent_failure_agreement_among_winner_paths():
    # All four paths give the same final answer but disagree on every sub-step.
    answers = [["1", "2", "3", "4"], ["5", "6", "7", "8"]]
    r = analyze_ars(["s1", "s2"], answers)
    assert r.agreement_among([0, 1, 2, 3]) == pytest.approx(0.25)
    # One answer shows neither agreement nor disagreement.
    assert r.agreement_among([0]) is None
    assert r.agreement_among([]) is None
    assert not r.informative  # no step has a mode


def test_shape_errors():
    with pytest.raises(ValueError):
        analyze_ars(["s1", "s2"], [["1"]])
    with pytest.raises(ValueError):
        analyze_ars(["s1", "s2"], [["1", "2"], ["1"]])
    with pytest.raises(ValueError):
        analyze_ars(["s1"], [["1", "2"]], final_answers=["1"])


def test_mean_agreement_leaves_echo_sub_questions_out():
    # Sub-question 2 restates the question: its (perfect) agreement says nothing the vote does not.
    analysis = analyze_ars(["How many at first?", "How many apples in all?"], [["7", "6"], ["12", "12"]],
                           final_answers=["12", "12"], question="How many apples in all?")
    assert analysis.echo == [False, True]
    assert analysis.mean_agreement == 0.5


def test_asked_needs_one_entry_per_sub_question():
    with pytest.raises(ValueError, match="asked"):
        analyze_ars(["a?", "b?"], [["1"], ["2"]], asked=[True])
    assert analyze_ars(["a?"], [["1"]], asked=[False]).asked == [False]
    assert analyze_ars(["a?", "b?"], [["1"], ["2"]]).asked == [True, True]  # not given: all asked
