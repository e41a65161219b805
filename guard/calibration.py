"""Risk-controlling calibration of the acceptance threshold (Learn-then-Test with binomial bounds)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


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

    An item whose confidence is -inf is one the deployed rule abstains on whatever the threshold: it
    is never accepted, but it stays in the coverage denominator.

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
        if threshold == -math.inf:
            break  # gated items (tie, silent failure, no answer) abstain at any threshold
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
    cut = round(n * fit_fraction)
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
    certified_and_met: int  # a threshold was certified and the held-out risk met the target
    certified_and_missed: int  # a threshold was certified and the held-out risk exceeded the target
    nothing_certified: int  # no threshold could be certified: the policy abstains on everything
    held_out_risk_mean: float  # over certified splits that accepted something on the held-out part
    held_out_coverage_mean: float  # over all splits (an uncertified split covers nothing)
    # certified_and_met / certified splits (nan when none certified): what the guarantee is about.
    within_target: float

    @property
    def certified(self) -> int:
        return self.certified_and_met + self.certified_and_missed


def check_splits(
    confidences: Sequence[float], correct: Sequence[bool], target_risk: float, delta: float,
    fit_fraction: float, seeds: Sequence[int],
) -> SplitCheck:
    """Refit on each seed's split and measure on its held-out part: how often the target holds there.

    A split that certifies nothing accepts nothing; it is counted apart, never as meeting the target.
    """
    risks, coverages, met, missed, nothing = [], [], 0, 0, 0
    for seed in seeds:
        fitted = fit_on_split(confidences, correct, target_risk, delta, fit_fraction, seed)
        coverages.append(fitted.held_out_coverage)
        if not fitted.result.feasible:
            nothing += 1
            continue
        if fitted.held_out_coverage > 0:
            risks.append(fitted.held_out_risk)
        if fitted.held_out_risk <= target_risk:
            met += 1
        else:
            missed += 1
    return SplitCheck(
        splits=len(seeds), certified_and_met=met, certified_and_missed=missed, nothing_certified=nothing,
        held_out_risk_mean=sum(risks) / len(risks) if risks else float("nan"),
        held_out_coverage_mean=sum(coverages) / len(coverages) if coverages else 0.0,
        within_target=met / (met + missed) if met + missed else float("nan"),
    )
