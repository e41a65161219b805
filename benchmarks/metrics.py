"""Decision-quality metrics: AUROC, risk-coverage curve and its area, Spearman correlation."""

from __future__ import annotations

import math
from collections.abc import Sequence


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Probability that a random correct item outscores a random wrong one (ties count half); nan if one class."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    ranked = sorted((s, i) for i, s in enumerate(scores))
    ranks = [0.0] * len(scores)
    j = 0
    while j < len(ranked):
        k = j
        while k + 1 < len(ranked) and ranked[k + 1][0] == ranked[j][0]:
            k += 1
        for m in range(j, k + 1):
            ranks[ranked[m][1]] = (j + k) / 2 + 1
        j = k + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def risk_coverage(scores: Sequence[float], labels: Sequence[bool]) -> tuple[list[float], list[float]]:
    """Coverage and risk (error rate among accepted) when accepting the top-c most confident items.

    Items with equal scores cannot be told apart by a threshold, so inside a tie group the risk is the
    expectation over orderings (errors accrue at the group's error rate), not an artefact of input order.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    coverage, risk = [], []
    errors_before = 0.0
    j = 0
    while j < len(order):
        k = j
        while k + 1 < len(order) and scores[order[k + 1]] == scores[order[j]]:
            k += 1
        group = order[j : k + 1]
        group_errors = sum(0 if labels[i] else 1 for i in group)
        rate = group_errors / len(group)
        for m in range(1, len(group) + 1):
            n = j + m
            coverage.append(n / len(order))
            risk.append((errors_before + m * rate) / n)
        errors_before += group_errors
        j = k + 1
    return coverage, risk


def aurc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the risk-coverage curve (lower is better)."""
    _, risk = risk_coverage(scores, labels)
    return sum(risk) / len(risk) if risk else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    pairs = [(a, b) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3:
        return float("nan")

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        j = 0
        while j < len(order):
            k = j
            while k + 1 < len(order) and v[order[k + 1]] == v[order[j]]:
                k += 1
            for m in range(j, k + 1):
                r[order[m]] = (j + k) / 2
            j = k + 1
        return r

    rx, ry = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    vy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (vx * vy) if vx and vy else float("nan")
