"""Consistency scorers, registered by name."""

from guard.scorers.base import Scorer, ScoringInput, Selection, select
from guard.scorers.deepconf import DeepConfScorer
from guard.scorers.majority import MajorityScorer
from guard.scorers.trace import TraceScorer

SCORERS: dict[str, Scorer] = {
    MajorityScorer.name: MajorityScorer(),
    "deepconf": DeepConfScorer("deepconf", keep_fraction=0.9),
    "deepconf-low": DeepConfScorer("deepconf-low", keep_fraction=0.1),
    TraceScorer.name: TraceScorer(),
}

# Registry order is the order tables and CLIs list them in.
SCORER_NAMES: tuple[str, ...] = tuple(SCORERS)

__all__ = ["SCORERS", "SCORER_NAMES", "Scorer", "ScoringInput", "Selection", "select"]
