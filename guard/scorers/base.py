"""The scorer protocol: per-path weights from which the answer clusters are ranked, and the selection."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from guard.answers import Answer, cluster_name
from guard.consistency import ArsAnalysis


@dataclass
class ScoringInput:
    """What a scorer may look at for one request."""

    answers: Sequence[Answer | None]
    # Indices of paths with equivalent answers; paths without an answer are in no cluster.
    clusters: Sequence[Sequence[int]]
    # Per path, per generated token: log-probs of the top-k alternatives (empty when not sampled).
    top_logprobs: Sequence[Sequence[Sequence[float]]] = ()
    # TRACE analysis of the sub-questions, when an ARS was probed.
    ars: ArsAnalysis | None = None

    @property
    def num_paths(self) -> int:
        return len(self.answers)


class Scorer(Protocol):
    name: str
    # Whether the scorer uses the ARS (the pipeline skips probing and scoring for scorers that don't).
    uses_ars: bool

    def weights(self, inp: ScoringInput) -> list[float]:
        """Weight of each path's vote (>= 0)."""

    def confidence(self, inp: ScoringInput, weights: Sequence[float], winner: Sequence[int]) -> float:
        """Confidence in [0, 1] that the winning cluster's answer is right."""


@dataclass
class Selection:
    winner: int | None  # index into clusters; None when no path has an answer
    path_weights: list[float]
    cluster_weights: list[float]
    confidence: float
    vote_share: float
    weighted_share: float
    margin: float
    is_tie: bool


def select(scorer: Scorer, inp: ScoringInput) -> Selection:
    """Pick the cluster with the highest total weight (ties: more paths, then the answer's text).

    Weights are compared rounded and ties broken by the answer itself, never by path order, so
    permuting the paths cannot change the selection.
    """
    weights = scorer.weights(inp)
    cluster_weights = [math.fsum(weights[i] for i in c) for c in inp.clusters]
    if not inp.clusters:
        return Selection(None, weights, [], 0.0, 0.0, 0.0, 0.0, False)
    order = sorted(
        range(len(inp.clusters)),
        key=lambda c: (-round(cluster_weights[c], 9), -len(inp.clusters[c]), cluster_name(inp.answers, inp.clusters[c])),
    )
    winner = order[0]
    total_weight = math.fsum(weights)
    runner_up = cluster_weights[order[1]] if len(order) > 1 else 0.0
    weighted_share = cluster_weights[winner] / total_weight if total_weight > 0 else 0.0
    margin = (cluster_weights[winner] - runner_up) / total_weight if total_weight > 0 else 0.0
    is_tie = len(order) > 1 and abs(cluster_weights[winner] - runner_up) <= 1e-9 * max(1.0, total_weight)
    confidence = min(1.0, max(0.0, scorer.confidence(inp, weights, inp.clusters[winner])))
    return Selection(
        winner=winner,
        path_weights=weights,
        cluster_weights=cluster_weights,
        confidence=confidence,
        vote_share=len(inp.clusters[winner]) / inp.num_paths,
        weighted_share=weighted_share,
        margin=margin,
        is_tie=is_tie,
    )

