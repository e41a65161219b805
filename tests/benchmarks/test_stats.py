"""Bootstrap intervals and selective accuracy against cases with known answers."""

import dataclasses
import math

import numpy as np
import pytest

from benchmarks.metrics import aurc, auroc, risk_coverage
from benchmarks.stats import (
    max_coverage,
    paired_bootstrap,
    risk_coverage_band,
    scorer_intervals,
    selective_accuracy,
)

NEG_INF = -math.inf


def test_bootstrap_of_a_mean_matches_the_normal_approximation():
    correct = np.array([True] * 200 + [False] * 200)
    ci = paired_bootstrap(400, lambda idx: {"accuracy": correct[idx].mean()})["accuracy"]
    half_width = 1.96 * math.sqrt(0.25 / 400)
    assert ci.estimate == 0.5 and ci.num_nan == 0 and ci.num_resamples == 1000
    assert ci.low == pytest.approx(0.5 - half_width, abs=0.01)
    assert ci.high == pytest.approx(0.5 + half_width, abs=0.01)


def test_vectorised_and_per_resample_bootstraps_agree():
    values = np.random.default_rng(3).random(50)
    one = paired_bootstrap(50, lambda idx: {"mean": values[idx].mean()}, num_resamples=200, seed=7)
    many = paired_bootstrap(50, lambda idx: {"mean": values[idx].mean(axis=1)}, num_resamples=200, seed=7,
                            vectorised=True)
    assert one["mean"].low == pytest.approx(many["mean"].low)
    assert one["mean"].high == pytest.approx(many["mean"].high)


def test_undefined_resamples_are_left_out_and_counted():
    def stats(idx):
        return {"x": math.nan if idx[0] == 0 else 1.0}

    ci = paired_bootstrap(2, stats, num_resamples=400)["x"]
    assert 100 < ci.num_nan < 300  # about half the resamples start with item 0
    assert (ci.low, ci.high) == (1.0, 1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be >= 1"),
    ({"n": 5, "num_resamples": 0}, "num_resamples must be >= 1"),
])
def test_bootstrap_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(stats_fn=lambda idx: {}, **kwargs)


def _random_scorers(n=300, seed=0):
    rng = np.random.default_rng(seed)
    correct = {s: rng.random(n) < 0.7 for s in ("majority", "deepconf", "deepconf-low", "trace")}
    confidence = {s: rng.integers(0, 8, n) / 8 for s in correct}  # coarse: many ties
    confidence["trace"][:15] = NEG_INF
    return correct, confidence


def test_point_estimates_equal_the_metrics_module():
    correct, confidence = _random_scorers()
    result = scorer_intervals(correct, confidence, num_resamples=10)
    for s in correct:
        got = result.per_scorer[s]
        assert got["auroc"].estimate == pytest.approx(auroc(confidence[s].tolist(), correct[s].tolist()))
        assert got["aurc"].estimate == pytest.approx(aurc(confidence[s].tolist(), correct[s].tolist()))
        assert got["accuracy"].estimate == pytest.approx(correct[s].mean())
        for c in (0.2, 0.5, 0.8):
            assert got[f"selective_accuracy@{c:g}"].estimate == pytest.approx(
                selective_accuracy(confidence[s], correct[s], c))
    trace_vs_majority = result.differences["trace - majority"]["auroc"].estimate
    assert trace_vs_majority == pytest.approx(
        result.per_scorer["trace"]["auroc"].estimate - result.per_scorer["majority"]["auroc"].estimate)
    assert set(result.differences) == {"trace - majority", "trace - deepconf"}
    assert dataclasses.asdict(result)["per_scorer"]["trace"]["auroc"]["num_resamples"] == 10


def test_identical_scorers_differ_by_exactly_zero():
    correct, confidence = _random_scorers()
    correct["twin"], confidence["twin"] = correct["trace"].copy(), confidence["trace"].copy()
    result = scorer_intervals(correct, confidence, pairs=[("trace", "twin")], num_resamples=300)
    for metric in ("auroc", "aurc"):
        diff = result.differences["trace - twin"][metric]
        assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)


def test_perfect_separator_has_auroc_one_and_beats_a_random_scorer():
    rng = np.random.default_rng(5)
    right = rng.random(300) < 0.6
    perfect = np.where(right, 0.5 + rng.random(300) / 2, rng.random(300) / 2)
    result = scorer_intervals({"trace": right, "majority": right}, {"trace": perfect, "majority": rng.random(300)},
                              pairs=[("trace", "majority")])
    ci = result.per_scorer["trace"]["auroc"]
    assert (ci.estimate, ci.low, ci.high) == (1.0, 1.0, 1.0)
    assert result.per_scorer["trace"]["aurc"].estimate < result.per_scorer["majority"]["aurc"].estimate
    assert result.differences["trace - majority"]["auroc"].low > 0
    assert result.differences["trace - majority"]["aurc"].high < 0


@pytest.mark.parametrize("coverage, expected", [
    (0.2, 1.0),  # the single top item
    (0.4, (1 + 1 / 3) / 2),  # top item + one of three tied, a third of them right
    (0.6, (1 + 2 / 3) / 3),  # top item + two of the three tied
    (0.8, (1 + 1) / 4),  # whole tied group
    (1.0, 3 / 5),
    (0.5, (1 + 2 / 3) / 3),  # 2.5 items rounds up to 3
])
def test_selective_accuracy_takes_the_expectation_over_tied_items(coverage, expected):
    confidence, correct = [0.9, 0.5, 0.5, 0.5, 0.1], [True, True, False, False, True]
    assert selective_accuracy(confidence, correct, coverage) == pytest.approx(expected)
    # Whichever of the tied items is the right one, the answer is the same.
    assert selective_accuracy(confidence, [True, False, False, True, True], coverage) == pytest.approx(expected)


def test_never_accepted_items_rank_last_and_cap_the_coverage():
    confidence, correct = [0.9, 0.8, NEG_INF, NEG_INF], [True, False, True, False]
    assert selective_accuracy(confidence, correct, 0.5) == 0.5
    assert math.isnan(selective_accuracy(confidence, correct, 0.75))
    assert max_coverage(confidence) == 0.5
    result = scorer_intervals({"s": correct}, {"s": confidence}, pairs=[], num_resamples=50)
    got = result.per_scorer["s"]
    # Right items: 0.9 beats both wrong ones (0.8, -inf); the right -inf loses to 0.8 and ties the wrong -inf.
    assert got["auroc"].estimate == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert got["auroc"].estimate == pytest.approx(auroc(confidence, correct))
    assert got["aurc"].estimate == pytest.approx(aurc(confidence, correct))
    assert got["max_coverage"].estimate == 0.5
    assert math.isnan(got["selective_accuracy@0.8"].estimate)
    assert got["selective_accuracy@0.8"].num_nan > 0
    # The band follows the plotted curve, which runs through the -inf group to coverage 1.
    band = risk_coverage_band(correct, confidence, [0.25, 0.5, 0.75, 1.0], num_resamples=50)
    assert band.risk == pytest.approx(risk_coverage(confidence, correct)[1])


def test_band_brackets_the_full_sample_curve():
    correct, confidence = _random_scorers()
    grid = np.linspace(0.1, 1.0, 10)
    band = risk_coverage_band(correct["deepconf"], confidence["deepconf"], grid)
    assert len(band.risk) == len(band.low) == len(band.high) == 10
    assert all(lo <= r <= hi for lo, r, hi in zip(band.low, band.risk, band.high))
    assert band.risk[-1] == pytest.approx(1 - correct["deepconf"].mean())


def test_seed_makes_results_reproducible():
    correct, confidence = _random_scorers()
    first = scorer_intervals(correct, confidence, num_resamples=100, seed=11)
    assert scorer_intervals(correct, confidence, num_resamples=100, seed=11) == first
    assert scorer_intervals(correct, confidence, num_resamples=100, seed=12) != first
    grid = [0.3, 0.6]
    assert risk_coverage_band(correct["trace"], confidence["trace"], grid, 100, seed=11) == \
        risk_coverage_band(correct["trace"], confidence["trace"], grid, 100, seed=11)


@pytest.mark.parametrize("correct, confidence, pairs, message", [
    ({"a": [True, False]}, {"a": [0.1, math.nan]}, [], "a: confidence is NaN"),
    ({"a": [0.3, 0.7]}, {"a": [True, False]}, [], "a: correct must be bool"),
    ({"a": [True], "b": [True, False]}, {"a": [0.1], "b": [0.1, 0.2]}, [], "aligned on the same problems"),
    ({"a": [True]}, {"b": [0.1]}, [], "different scorers"),
    ({"a": [True]}, {"a": [0.1]}, [("a", "trace")], "names a scorer not given"),
])
def test_scorer_intervals_rejects_bad_input(correct, confidence, pairs, message):
    with pytest.raises(ValueError, match=message):
        scorer_intervals(correct, confidence, pairs=pairs, num_resamples=5)


@pytest.mark.parametrize("coverage", [0.0, -0.1, 1.5])
def test_selective_accuracy_rejects_coverage_outside_0_1(coverage):
    with pytest.raises(ValueError, match="coverage must be in"):
        selective_accuracy([0.1, 0.2], [True, False], coverage)
