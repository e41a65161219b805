"""TRACE: votes weighted by each path's ARS support; without an ARS it falls back to the majority vote."""

from __future__ import annotations

from typing import Sequence

from guard.scorers.base import ScoringInput


class TraceScorer:
    name = "trace"
    uses_ars = True

    def weights(self, inp: ScoringInput) -> list[float]:
        if inp.ars is None:
            return [1.0 if a is not None else 0.0 for a in inp.answers]
        return [s if a is not None else 0.0 for s, a in zip(inp.ars.support, inp.answers)]

    def confidence(self, inp: ScoringInput, weights: Sequence[float], winner: Sequence[int]) -> float:
        if not inp.num_paths:
            return 0.0
        if inp.ars is None:
            return len(winner) / inp.num_paths
        # Support summed over the winner's paths, over all paths: 1.0 only when every path gives this
        # answer and agrees on every sub-step; a unanimous answer reached through disagreeing steps
        # (silent failure) scores low.
        return sum(weights[i] for i in winner) / inp.num_paths
