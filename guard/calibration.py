"""Risk-controlling calibration of the acceptance threshold (Learn-then-Test with binomial bounds)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence


def binomial_upper_bound(errors: int, n: int, delta: float) -> float:
    """Clopper-Pearson upper confidence bound on an error rate: P(true rate > bound) <= delta."""
    if n == 0:
        return 1.0
    if errors >= n:
        return 1.0

    def cdf(p: float) -> float:  # P(X <= errors) for X ~ Bin(n, p), summed in log space
        if p <= 0.0:
            return 1.0
        if p >= 1.0:
            return 0.0
        log_p, log_q = math.log(p), math.log1p(-p)
        terms = [
            math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
            for k in range(errors + 1)
        ]
        top = max(terms)
        return math.exp(top) * sum(math.exp(t - top) for t in terms)

    lo, hi = errors / n, 1.0
    for _ in range(60):  # bisection: cdf is decreasing in p
        mid = (lo + hi) / 2
        if cdf(mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class CalibrationResult:
    threshold: float
    # On the fitting split: accepted count, their errors, and the risk bound at the threshold.
    fit_accepted: int
    fit_errors: int
    fit_risk_bound: float
    feasible: bool  # False when no threshold met the target: the threshold then accepts nothing


def fit_threshold(
    confidences: Sequence[float], correct: Sequence[bool], target_risk: float, delta: float
) -> CalibrationResult:
    """Lowest threshold whose accepted set has error rate <= target_risk with probability >= 1 - delta.

    Fixed-sequence testing over thresholds from strict to lenient: each threshold is tested at level
    delta (binomial upper bound <= target), and the walk stops at the first failure. Because the
    order is fixed in advance, the family-wise error stays at delta without a Bonferroni split.
    """
    if not 0 < target_risk < 1 or not 0 < delta < 1:
        raise ValueError("target_risk and delta must be in (0, 1)")
    # Fewest accepted items that could pass even with no error: stricter thresholds are skipped
    # rather than tested (they would fail and end the sequence). The skip looks only at the
    # confidences, never at the labels, so the guarantee is unchanged.
    min_accepted = math.ceil(math.log(delta) / math.log1p(-target_risk))
    best = CalibrationResult(threshold=math.inf, fit_accepted=0, fit_errors=0, fit_risk_bound=1.0, feasible=False)
    items = sorted(zip(confidences, correct), key=lambda item: -item[0])
    accepted = errors = 0
    for i, (threshold, ok) in enumerate(items):
        accepted += 1
        errors += 0 if ok else 1
        # Items tied at this confidence are accepted together: test once the last of them is in.
        if i + 1 < len(items) and items[i + 1][0] == threshold:
            continue
        if accepted < min_accepted:
            continue
        bound = binomial_upper_bound(errors, accepted, delta)
        if bound > target_risk:
            break
        best = CalibrationResult(threshold, accepted, errors, bound, True)
    return best


def split(n: int, fit_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded shuffle of range(n) into a fitting part and a held-out part."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = int(round(n * fit_fraction))
    return order[:cut], order[cut:]


def risk_and_coverage(confidences: Sequence[float], correct: Sequence[bool], threshold: float) -> tuple[float, float]:
    accepted = [ok for c, ok in zip(confidences, correct) if c >= threshold]
    coverage = len(accepted) / len(confidences) if confidences else 0.0
    risk = sum(1 for ok in accepted if not ok) / len(accepted) if accepted else 0.0
    return risk, coverage


@dataclass(frozen=True)
class SplitFit:
    """A threshold fitted on one split's fitting part, with risk and coverage on both parts."""

    result: CalibrationResult
    fit_items: int
    held_out_items: int
    fit_risk: float
    fit_coverage: float
    held_out_risk: float
    held_out_coverage: float


def fit_on_split(
    confidences: Sequence[float], correct: Sequence[bool], target_risk: float, delta: float,
    fit_fraction: float, seed: int,
) -> SplitFit:
    """Fit the threshold on the seed's fitting part and measure it on both parts."""
    fit_idx, held_idx = split(len(confidences), fit_fraction, seed)
    fit_conf, fit_ok = [confidences[i] for i in fit_idx], [correct[i] for i in fit_idx]
    held_conf, held_ok = [confidences[i] for i in held_idx], [correct[i] for i in held_idx]
    result = fit_threshold(fit_conf, fit_ok, target_risk, delta)
    return SplitFit(result, len(fit_idx), len(held_idx), *risk_and_coverage(fit_conf, fit_ok, result.threshold),
                    *risk_and_coverage(held_conf, held_ok, result.threshold))


@dataclass(frozen=True)
class SplitCheck:
    """Held-out risk and coverage of the fitted threshold over many random fit/held-out splits."""

    splits: int
    feasible: int  # splits on which some threshold could be certified
    held_out_risk_mean: float  # over feasible splits that accepted something
    held_out_coverage_mean: float  # over all splits (an infeasible split covers nothing)
    within_target: float  # share of splits whose held-out risk is at most the target


def check_splits(
    confidences: Sequence[float], correct: Sequence[bool], target_risk: float, delta: float,
    fit_fraction: float, seeds: Sequence[int],
) -> SplitCheck:
    """Refit on each seed's split and measure on its held-out part: how often the target holds there."""
    risks, coverages, within, feasible = [], [], 0, 0
    for seed in seeds:
        fitted = fit_on_split(confidences, correct, target_risk, delta, fit_fraction, seed)
        # An infeasible fit has an infinite threshold: it accepts nothing, risk and coverage 0.
        risk, coverage = fitted.held_out_risk, fitted.held_out_coverage
        feasible += fitted.result.feasible
        if fitted.result.feasible and coverage > 0:
            risks.append(risk)
        coverages.append(coverage)
        within += risk <= target_risk
    return SplitCheck(
        splits=len(seeds), feasible=feasible,
        held_out_risk_mean=sum(risks) / len(risks) if risks else 0.0,
        held_out_coverage_mean=sum(coverages) / len(coverages) if coverages else 0.0,
        within_target=within / len(seeds) if seeds else 0.0,
    )
