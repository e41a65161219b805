"""TRACE metrics on hand-built probe answers: agreement, soft agreement, support, First Failure Step."""

import pytest

from guard.consistency import analyze_ars

SUBS = ["s1", "s2", "s3"]


@pytest.mark.parametrize(
    "answers, modal, agreement",
    [
        ([["5", "5", "5", "5"]], ["5"], [1.0]),
        ([["5", "5", "6", "7"]], ["5"], [0.5]),
        ([["5", "", "", ""]], ["5"], [0.25]),
        ([["", "", "", ""]], [""], [0.0]),
        # Ties go to the answer seen first.
        ([["6", "5", "5", "6"]], ["6"], [0.5]),
    ],
)
def test_modal_answer_and_hard_agreement(answers, modal, agreement):
    result = analyze_ars(["s1"], answers)
    assert result.modal == modal
    assert result.agreement == pytest.approx(agreement)
    # Without soft scores, soft agreement is the hard agreement.
    assert result.soft_agreement == pytest.approx(agreement)


def test_support_is_agreement_weighted_share_of_matched_modes():
    answers = [
        ["1", "1", "1", "1"],  # a=1.0
        ["2", "2", "3", "3"],  # a=0.5, mode "2"
        ["4", "9", "9", "9"],  # a=0.75, mode "9"
    ]
    r = analyze_ars(SUBS, answers)
    total = 1.0 + 0.5 + 0.75
    assert r.support[0] == pytest.approx((1.0 + 0.5) / total)  # misses s3
    assert r.support[1] == pytest.approx((1.0 + 0.5 + 0.75) / total)
    assert r.support[2] == pytest.approx((1.0 + 0.75) / total)  # misses s2
    assert r.support[3] == pytest.approx((1.0 + 0.75) / total)


@pytest.mark.parametrize(
    "answers, threshold, expected",
    [
        # Path 2 departs at s2 (a=0.75 >= 0.5); path 3 departs at s1.
        ([["1", "1", "1", "7"], ["2", "2", "8", "2"], ["3", "3", "3", "3"]], 0.5, [None, None, 2, 1]),
        # A departure from a weak mode (a=0.5 < 0.6) is not a failure step.
        ([["1", "1", "1", "1"], ["2", "2", "3", "3"], ["4", "4", "4", "5"]], 0.6, [None, None, None, 3]),
        # Unanswered counts as departing.
        ([["1", "", "1", "1"]], 0.5, [None, 1, None, None]),
    ],
)
def test_first_failure_step(answers, threshold, expected):
    subs = [f"s{k}" for k in range(len(answers))]
    assert analyze_ars(subs, answers, ffs_threshold=threshold).first_failure_step == expected


def test_soft_scores_replace_hard_matches():
    answers = [["5", "5", "6", "6"]]
    soft = [[{"5": 0.9, "6": 0.1}, {"5": 0.8, "6": 0.2}, {"5": 0.6, "6": 0.4}, {"5": 0.1, "6": 0.9}]]
    r = analyze_ars(["s1"], answers, soft)
    assert r.modal == ["5"]
    assert r.agreement == [0.5]
    assert r.soft_agreement[0] == pytest.approx((0.9 + 0.8 + 0.6 + 0.1) / 4)
    # Path 2 answered "6" but puts 0.6 on "5": its support counts that mass, while the FFS follows
    # the answer it actually gave.
    assert r.support[2] == pytest.approx(0.6)
    assert r.support[3] == pytest.approx(0.1)
    assert r.first_failure_step == [None, None, 1, 1]


def test_silent_failure_agreement_among_winner_paths():
    # All four paths give the same final answer but disagree on every sub-step.
    answers = [["1", "2", "3", "4"], ["5", "6", "7", "8"]]
    r = analyze_ars(["s1", "s2"], answers)
    assert r.agreement_among([0, 1, 2, 3]) == pytest.approx(0.25)
    assert r.agreement_among([0]) == pytest.approx(1.0)
    assert r.agreement_among([]) == 0.0


def test_shape_errors():
    with pytest.raises(ValueError):
        analyze_ars(["s1", "s2"], [["1"]])
    with pytest.raises(ValueError):
        analyze_ars(["s1", "s2"], [["1", "2"], ["1"]])
