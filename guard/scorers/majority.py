"""Self-consistency baseline: one path, one vote; confidence is the winner's vote share."""

from __future__ import annotations

from collections.abc import Sequence

from guard.scorers.base import ScoringInput


class MajorityScorer:
    name = "majority"
    uses_ars = False

    def weights(self, inp: ScoringInput) -> list[float]:
        return [1.0 if a is not None else 0.0 for a in inp.answers]

    def confidence(self, inp: ScoringInput, weights: Sequence[float], winner: Sequence[int]) -> float:
        # Share of all paths, so paths without an answer count against the winner.
        return len(winner) / inp.num_paths if inp.num_paths else 0.0
