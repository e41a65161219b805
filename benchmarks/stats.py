"""Paired bootstrap intervals for the decision-quality metrics (AUROC, AURC, selective accuracy) of scorers."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("trace", "majority"), ("trace", "deepconf"))
DEFAULT_COVERAGES: tuple[float, ...] = (0.2, 0.5, 0.8)


@dataclass(frozen=True)
class Interval:
    """A statistic on the full sample with its 95% bootstrap percentile interval."""

    estimate: float
    low: float  # 2.5th percentile over the resamples where the statistic is defined
    high: float  # 97.5th percentile
    num_nan: int  # resamples where it was undefined (e.g. AUROC of a one-class resample), left out
    num_resamples: int


@dataclass(frozen=True)
class ScorerIntervals:
    """What `scorer_intervals` measured; `dataclasses.asdict` gives the JSON-ready form."""

    # scorer -> metric -> interval; metrics: accuracy, auroc, aurc, max_coverage, selective_accuracy@<c>
    per_scorer: dict[str, dict[str, Interval]]
    # "a - b" -> {"auroc", "aurc"} -> interval of the difference, taken within each resample
    differences: dict[str, dict[str, Interval]]


@dataclass(frozen=True)
class RiskBand:
    """Risk (error rate among accepted) at each coverage of a grid, with its 95% bootstrap band."""

    coverage: list[float]
    risk: list[float]  # full sample; equals metrics.risk_coverage at coverage ceil(c * n) / n
    low: list[float]
    high: list[float]


def resample_indices(n: int, num_resamples: int, seed: int) -> np.ndarray:
    """(num_resamples, n) problem indices drawn with replacement; one row per resample."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(num_resamples, n))


def paired_bootstrap(
    n: int,
    stats_fn: Callable[[np.ndarray], Mapping[Hashable, float]],
    num_resamples: int = 1000,
    seed: int = 0,
    *,
    vectorised: bool = False,
) -> dict[Hashable, Interval]:
    """Bootstrap every statistic `stats_fn` returns over the same resamples of the n problems.

    `stats_fn(indices)` gets one resample (an index array of length n, the full sample being
    `arange(n)`) and returns {name: value}; statistics of all scorers computed from the same
    indices are paired. With `vectorised=True` it gets a (rows, n) matrix instead and returns
    {name: array of one value per row}; the resamples are the same as without it for the same seed.
    """
    indices = resample_indices(n, num_resamples, seed)
    full = np.arange(n)
    if vectorised:
        point = {k: float(np.asarray(v, dtype=float)[0]) for k, v in stats_fn(full[None, :]).items()}
        samples = {k: np.asarray(v, dtype=float) for k, v in stats_fn(indices).items()}
    else:
        point = {k: float(v) for k, v in stats_fn(full).items()}
        rows = [stats_fn(row) for row in indices]
        samples = {k: np.array([r[k] for r in rows], dtype=float) for k in point}
    return {k: _interval(point[k], samples[k]) for k in point}


def _interval(estimate: float, samples: np.ndarray) -> Interval:
    defined = samples[~np.isnan(samples)]
    low, high = np.percentile(defined, [2.5, 97.5]) if defined.size else (math.nan, math.nan)
    return Interval(estimate, float(low), float(high), int(samples.size - defined.size), int(samples.size))


class _Ranking:
    """One scorer's items grouped by confidence, highest first, so a resample reduces to per-group counts.

    Tied items form one group: a threshold cannot split them, so every metric takes the expectation
    over their random order. -inf confidence (the deployed rule abstains at any threshold) is the
    last group.
    """

    def __init__(self, name: str, correct: Sequence[bool], confidence: Sequence[float]):
        right = np.asarray(correct)
        conf = np.asarray(confidence, dtype=float)
        if right.ndim != 1 or right.shape != conf.shape:
            raise ValueError(f"{name}: correct and confidence must be 1-D of one length, "
                             f"got shapes {right.shape} and {conf.shape}")
        if not np.isin(right, (0, 1)).all():
            # Catches confidence passed where correct belongs (the argument orders differ by caller).
            raise ValueError(f"{name}: correct must be bool, got values {np.unique(right)[:5].tolist()}")
        if np.isnan(conf).any():
            raise ValueError(f"{name}: confidence is NaN at items {np.flatnonzero(np.isnan(conf))[:5].tolist()}; "
                             f"use -inf for items never accepted")
        distinct, self.group = np.unique(-conf, return_inverse=True)  # ascending -conf: most confident first
        self.group = self.group.reshape(-1)
        self.num_groups = len(distinct)
        self.correct = right.astype(float)
        self.n = len(conf)
        self.has_never_accepted = bool(len(distinct) and distinct[-1] == math.inf)

    def counts(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items and correct items per confidence group in each resample row: two (rows, groups) arrays."""
        rows, g = indices.shape[0], self.num_groups
        flat = (np.arange(rows)[:, None] * g + self.group[indices]).ravel()
        size = np.bincount(flat, minlength=rows * g).reshape(rows, g).astype(float)
        right = np.bincount(flat, weights=self.correct[indices].ravel(), minlength=rows * g).reshape(rows, g)
        return size, right

    def accepted_order(self, indices: np.ndarray) -> np.ndarray:
        """Group of the k-th accepted item, k = 1..n, in each row (ties are one group, so any order works)."""
        return np.sort(self.group[indices], axis=1)

    def finite_count(self, size: np.ndarray) -> np.ndarray:
        return size.sum(axis=1) - (size[:, -1] if self.has_never_accepted else 0.0)


def _auroc(size: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per row (ties count half), nan where a row has one class; equals metrics.auroc."""
    wrong = size - right
    num_right, num_wrong = right.sum(axis=1), wrong.sum(axis=1)
    wrong_below = num_wrong[:, None] - np.cumsum(wrong, axis=1)  # groups are in descending confidence
    wins = (right * (wrong_below + 0.5 * wrong)).sum(axis=1)
    pairs = num_right * num_wrong
    return np.divide(wins, pairs, out=np.full_like(wins, math.nan), where=pairs > 0)


def _aurc(size: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Mean risk over coverages k/n, k = 1..n, per row; equals metrics.aurc.

    Inside a group of s items starting after j accepted ones with e errors, the expected risk at
    j + m is (E + m e / s) / (j + m), E being the errors before the group; its sum over m = 1..s is
    E (H[j+s] - H[j]) + e - (e / s) j (H[j+s] - H[j]) with H the harmonic numbers.
    """
    n = round(size[0].sum())
    harmonic = np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, n + 1))))
    errors = size - right
    end = np.cumsum(size, axis=1)
    start = end - size
    errors_before = np.cumsum(errors, axis=1) - errors
    d_harmonic = harmonic[end.astype(int)] - harmonic[start.astype(int)]
    rate = np.divide(errors, size, out=np.zeros_like(errors), where=size > 0)
    return (errors_before * d_harmonic + errors - rate * start * d_harmonic).sum(axis=1) / n


def _risk_at(ranking: _Ranking, indices: np.ndarray, size: np.ndarray, right: np.ndarray,
             accepted: np.ndarray) -> np.ndarray:
    """Expected risk when accepting the `accepted[i]` most confident items, per row: (rows, len(accepted))."""
    group = ranking.accepted_order(indices)[:, accepted - 1]
    errors = size - right

    def take(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, group, axis=1)

    end, group_size, group_errors = take(np.cumsum(size, axis=1)), take(size), take(errors)
    errors_before = take(np.cumsum(errors, axis=1)) - group_errors
    from_group = accepted[None, :] - (end - group_size)
    return (errors_before + from_group * group_errors / group_size) / accepted[None, :]


def _num_accepted(coverage: Sequence[float], n: int) -> np.ndarray:
    cov = np.asarray(coverage, dtype=float).reshape(-1)
    bad = cov[~((cov > 0) & (cov <= 1))]
    if bad.size:
        raise ValueError(f"coverage must be in (0, 1], got {bad[0]}")
    # The smallest k with k / n >= coverage; the tolerance keeps 0.2 * 300 at 60, not 61.
    return np.clip(np.ceil(cov * n - 1e-9), 1, n).astype(int)


def _selective_accuracy(ranking: _Ranking, indices: np.ndarray, size: np.ndarray, right: np.ndarray,
                        coverage: Sequence[float]) -> np.ndarray:
    accepted = _num_accepted(coverage, ranking.n)
    accuracy = 1.0 - _risk_at(ranking, indices, size, right, accepted)
    return np.where(accepted[None, :] > ranking.finite_count(size)[:, None], math.nan, accuracy)


def selective_accuracy(confidence: Sequence[float], correct: Sequence[bool], coverage: float) -> float:
    """Accuracy among the ceil(coverage * n) most confident items; nan if that needs a -inf item.

    Items tied at the cut are taken in random order and the result is the exact expectation: the
    accepted part of the tied group contributes its share times the group's accuracy. Items with
    -inf confidence are never accepted, so a coverage above the share of finite ones is not
    reachable by any threshold and gives nan (see `max_coverage`).
    """
    ranking = _Ranking("selective_accuracy", correct, confidence)
    rows = np.arange(ranking.n)[None, :]
    return float(_selective_accuracy(ranking, rows, *ranking.counts(rows), [coverage])[0, 0])


def max_coverage(confidence: Sequence[float]) -> float:
    """Share of items with finite confidence: the highest coverage any threshold reaches."""
    conf = np.asarray(confidence, dtype=float)
    return float(np.mean(conf > -math.inf)) if conf.size else math.nan


def scorer_intervals(
    correct: Mapping[str, Sequence[bool]],
    confidence: Mapping[str, Sequence[float]],
    pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
    num_resamples: int = 1000,
    seed: int = 0,
) -> ScorerIntervals:
    """Per scorer accuracy, AUROC, AURC, max coverage and selective accuracy at each coverage, and the
    AUROC and AURC differences a - b for each pair, all over the same resamples of the problems."""
    if set(correct) != set(confidence):
        raise ValueError(f"correct and confidence name different scorers: {sorted(correct)} vs {sorted(confidence)}")
    rankings = {s: _Ranking(s, correct[s], confidence[s]) for s in correct}
    lengths = {s: r.n for s, r in rankings.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"scorers must be aligned on the same problems, got lengths {lengths}")
    for a, b in pairs:
        if a not in rankings or b not in rankings:
            raise ValueError(f"pair ({a!r}, {b!r}) names a scorer not given; scorers: {sorted(rankings)}")
    coverage_names = [f"selective_accuracy@{c:g}" for c in coverages]

    def stats(indices: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
        out = {}
        for s, ranking in rankings.items():
            size, right = ranking.counts(indices)
            out[s, "accuracy"] = right.sum(axis=1) / ranking.n
            out[s, "auroc"] = _auroc(size, right)
            out[s, "aurc"] = _aurc(size, right)
            out[s, "max_coverage"] = ranking.finite_count(size) / ranking.n
            if coverage_names:
                selective = _selective_accuracy(ranking, indices, size, right, coverages)
                for i, name in enumerate(coverage_names):
                    out[s, name] = selective[:, i]
        for a, b in pairs:
            for metric in ("auroc", "aurc"):
                out[f"{a} - {b}", metric] = out[a, metric] - out[b, metric]
        return out

    n = next(iter(lengths.values()), 0)
    flat = paired_bootstrap(n, stats, num_resamples, seed, vectorised=True)
    per_scorer: dict[str, dict[str, Interval]] = {s: {} for s in rankings}
    differences: dict[str, dict[str, Interval]] = {f"{a} - {b}": {} for a, b in pairs}
    for (group, metric), interval in flat.items():
        (per_scorer if group in per_scorer else differences)[group][metric] = interval
    return ScorerIntervals(per_scorer, differences)


def risk_coverage_band(
    correct: Sequence[bool],
    confidence: Sequence[float],
    grid: Sequence[float],
    num_resamples: int = 1000,
    seed: int = 0,
) -> RiskBand:
    """Bootstrap band of one scorer's risk-coverage curve at each coverage of `grid`, in (0, 1].

    Follows metrics.risk_coverage, the curve it decorates: -inf items rank last (as one tied group)
    and the curve runs to coverage 1. The same seed and n resample the same problems for every
    scorer, so bands of several scorers are paired.
    """
    ranking = _Ranking("risk_coverage_band", correct, confidence)
    accepted = _num_accepted(grid, ranking.n)

    def stats(indices: np.ndarray) -> dict[int, np.ndarray]:
        risk = _risk_at(ranking, indices, *ranking.counts(indices), accepted)
        return {i: risk[:, i] for i in range(len(accepted))}

    band = paired_bootstrap(ranking.n, stats, num_resamples, seed, vectorised=True)
    points = [band[i] for i in range(len(accepted))]
    return RiskBand([float(c) for c in grid], [p.estimate for p in points],
                    [p.low for p in points], [p.high for p in points])
