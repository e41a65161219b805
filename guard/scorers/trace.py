"""TRACE: votes weighted by each path's ARS support; without an informative ARS it is the majority vote."""

from __future__ import annotations

import math
from collections.abc import Sequence

from guard.scorers.base import ScoringInput


def uses_support(inp: ScoringInput) -> bool:
    """Whether the ARS can weigh the votes: some path has a step (answered, not an echo, with a mode).

    When every probe went unanswered, every step is an echo or no step has a mode, the sub-questions
    say nothing about any path, and TRACE is the plain vote (the pipeline notes it).
    """
    return inp.ars is not None and inp.ars.informative


class TraceScorer:
    name = "trace"
    uses_ars = True

    def weights(self, inp: ScoringInput) -> list[float]:
        if not uses_support(inp):
            return [1.0 if a is not None else 0.0 for a in inp.answers]
        return [s if a is not None else 0.0 for s, a in zip(inp.ars.filled_support(), inp.answers)]

    def confidence(self, inp: ScoringInput, weights: Sequence[float], winner: Sequence[int]) -> float:
        if not inp.num_paths:
            return 0.0
        # Support summed over the winner's paths, over all paths: 1.0 only when every path gives this
        # answer and agrees on every informative sub-step (the plain vote share without an ARS).
        return math.fsum(weights[i] for i in winner) / inp.num_paths
