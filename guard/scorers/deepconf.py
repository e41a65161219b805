"""DeepConf: votes weighted by token confidence (lowest sliding-window group confidence), weak traces dropped."""

from __future__ import annotations

import math
from collections.abc import Sequence

from guard.scorers.base import ScoringInput


def token_confidences(top_logprobs: Sequence[Sequence[float]]) -> list[float]:
    """Per token: minus the mean log-probability of the top-k alternatives (high = peaked = confident)."""
    return [-sum(alts) / len(alts) for alts in top_logprobs if alts]


def path_confidence(top_logprobs: Sequence[Sequence[float]], window: int = 16) -> float:
    """Lowest mean token confidence over sliding windows (DeepConf's "lowest group confidence")."""
    conf = token_confidences(top_logprobs)
    if not conf:
        return 0.0
    if len(conf) <= window:
        return sum(conf) / len(conf)
    running = sum(conf[:window])
    lowest = running
    for j in range(window, len(conf)):
        running += conf[j] - conf[j - window]
        lowest = min(lowest, running)
    return lowest / window


def kept_count(num_answered: int, keep_fraction: float) -> int:
    """Traces DeepConf keeps: the top keep_fraction by confidence, rounded down, at least one.

    Rounding down is what makes the 90% variant filter anything at small N (8 paths keep 7).
    """
    return max(1, math.floor(keep_fraction * num_answered + 1e-9))


class DeepConfScorer:
    """DeepConf offline voting (Fu et al. 2025): keep the most confident traces, weight votes by confidence.

    `deepconf` keeps the top 90% (DeepConf-high), `deepconf-low` the top 10% (DeepConf-low).
    """

    def __init__(self, name: str = "deepconf", window: int = 16, keep_fraction: float = 0.9):
        self.name = name
        self.uses_ars = False
        self.window = window
        self.keep_fraction = keep_fraction

    def weights(self, inp: ScoringInput) -> list[float]:
        if not inp.top_logprobs:
            return [1.0 if a is not None else 0.0 for a in inp.answers]
        conf = [path_confidence(t, self.window) for t in inp.top_logprobs]
        answered = sorted((conf[i] for i, a in enumerate(inp.answers) if a is not None), reverse=True)
        if not answered:
            return [0.0] * inp.num_paths
        # Paths tied with the last one kept are kept too, so path order never decides.
        cutoff = answered[kept_count(len(answered), self.keep_fraction) - 1]
        return [
            conf[i] if a is not None and conf[i] >= cutoff else 0.0 for i, a in enumerate(inp.answers)
        ]

    def confidence(self, inp: ScoringInput, weights: Sequence[float], winner: Sequence[int]) -> float:
        total = math.fsum(weights)
        if total <= 0:
            return 0.0
        # Confidence-weighted vote share, scaled by the raw vote share so a lone confident path among
        # many unanswered ones cannot reach full confidence.
        weighted_share = math.fsum(weights[i] for i in winner) / total
        answered = sum(1 for a in inp.answers if a is not None)
        return weighted_share * answered / inp.num_paths
