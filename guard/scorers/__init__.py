"""Consistency scorers, registered by name."""

from guard.scorers.base import Scorer, ScoringInput, Selection, select
from guard.scorers.deepconf import DeepConfScorer
from guard.scorers.majority import MajorityScorer
from guard.scorers.trace import TraceScorer

SCORERS: dict[str, Scorer] = {
    MajorityScorer.name: MajorityScorer(),
    DeepConfScorer.name: DeepConfScorer(),
    TraceScorer.name: TraceScorer(),
}

__all__ = ["SCORERS", "Scorer", "ScoringInput", "Selection", "select"]
