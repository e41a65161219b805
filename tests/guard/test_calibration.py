"""Calibration: binomial bounds, fixed-sequence threshold fitting, splits."""

import math
import random

import pytest

from guard.calibration import binomial_upper_bound, check_splits, fit_threshold, risk_and_coverage, split


@pytest.mark.parametrize(
    "errors, n, delta, expected",
    [
        (0, 10, 0.05, 0.2589),  # 1 - 0.05 ** (1/10)
        (0, 100, 0.05, 0.0295),
        (5, 100, 0.05, 0.1023),
        (10, 10, 0.1, 1.0),
        (0, 0, 0.1, 1.0),
    ],
)
def test_clopper_pearson_upper_bound(errors, n, delta, expected):
    assert binomial_upper_bound(errors, n, delta) == pytest.approx(expected, abs=2e-3)


def test_fit_picks_lowest_threshold_meeting_the_bound():
    # Confident items are right, unconfident ones wrong.
    conf = [0.9] * 50 + [0.5] * 50
    correct = [True] * 50 + [False] * 50
    result = fit_threshold(conf, correct, target_risk=0.1, delta=0.1)
    assert result.feasible and result.threshold == 0.9
    assert result.fit_accepted == 50 and result.fit_errors == 0
    assert result.fit_risk_bound <= 0.1


def test_infeasible_target_accepts_nothing():
    result = fit_threshold([0.9, 0.8, 0.7], [False, False, True], target_risk=0.05, delta=0.1)
    assert not result.feasible and result.threshold == float("inf")
    assert risk_and_coverage([0.9], [False], result.threshold) == (0.0, 0.0)


def test_bound_holds_on_held_out_data_in_simulation():
    # Confidence is informative: P(correct) = confidence. The held-out risk should respect the
    # target in the vast majority of draws (delta = 0.1).
    rng = random.Random(0)
    violations = 0
    coverages = []
    for trial in range(40):
        conf = [rng.random() for _ in range(600)]
        correct = [rng.random() < c for c in conf]
        fit, held = split(len(conf), 0.5, seed=trial)
        r = fit_threshold([conf[i] for i in fit], [correct[i] for i in fit], target_risk=0.2, delta=0.1)
        risk, coverage = risk_and_coverage([conf[i] for i in held], [correct[i] for i in held], r.threshold)
        coverages.append(coverage)
        violations += risk > 0.2 + 0.05
    assert violations <= 4
    # Valid is not enough: it must also accept a useful share (P(correct) >= 0.8 covers 20%).
    assert sum(coverages) / len(coverages) > 0.1


def test_split_is_a_seeded_partition():
    a, b = split(10, 0.6, seed=3)
    assert sorted(a + b) == list(range(10)) and len(a) == 6
    assert split(10, 0.6, seed=3) == (a, b)


def test_check_splits_refits_per_split_and_measures_held_out():
    import random

    from guard.calibration import check_splits

    rng = random.Random(1)
    # Confidence 0.9 is right 95% of the time, 0.3 is right 20% of the time.
    conf, ok = [], []
    for _ in range(400):
        high = rng.random() < 0.5
        conf.append(0.9 if high else 0.3)
        ok.append(rng.random() < (0.95 if high else 0.2))
    check = check_splits(conf, ok, target_risk=0.15, delta=0.1, fit_fraction=0.5, seeds=range(20))
    assert check.splits == 20 and check.certified == 20
    assert 0.4 < check.held_out_coverage_mean < 0.6  # only the 0.9 items are accepted
    assert check.held_out_risk_mean < 0.15 and check.within_target >= 0.9
    # A target no threshold can meet: nothing certified on any split, and that is not "meeting" it
    # (it used to count as within target on every split).
    none = check_splits(conf, ok, target_risk=0.01, delta=0.1, fit_fraction=0.5, seeds=range(5))
    assert none.nothing_certified == 5 and none.certified == 0 and none.held_out_coverage_mean == 0.0
    assert math.isnan(none.within_target)


def test_check_splits_counts_certified_misses():
    # Confidence carries no information and half the answers are wrong: at a lenient target some
    # splits certify and then miss on the held-out half.
    rng = random.Random(2)
    conf = [rng.random() for _ in range(200)]
    ok = [rng.random() < 0.6 for _ in conf]
    check = check_splits(conf, ok, target_risk=0.45, delta=0.4, fit_fraction=0.5, seeds=range(40))
    assert check.certified_and_met + check.certified_and_missed + check.nothing_certified == 40
    assert check.certified_and_missed > 0
    assert check.within_target == check.certified_and_met / check.certified


def test_gated_items_are_never_accepted_but_stay_in_the_coverage():
    # Two items are right at high confidence but a gate (tie, silent failure) abstains on them anyway.
    conf = [0.9] * 40 + [float("-inf")] * 2 + [0.2] * 40
    ok = [True] * 42 + [False] * 40
    result = fit_threshold(conf, ok, target_risk=0.1, delta=0.1)
    assert result.feasible and result.threshold == 0.9 and result.fit_accepted == 40
    risk, coverage = risk_and_coverage(conf, ok, result.threshold)
    assert coverage == pytest.approx(40 / 82) and risk == 0.0
    # A lenient target never reaches the gated items either.
    assert fit_threshold(conf, ok, target_risk=0.9, delta=0.1).fit_accepted == 80
