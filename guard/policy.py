"""Decision policy: maps the winner's features to a confidence region and ACCEPT / ABSTAIN with a reason."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from guard.consistency import ArsAnalysis
from guard.result import AbstainReason, Decision, Region
from guard.scorers import Selection


@dataclass(frozen=True)
class Policy:
    """Thresholds of the decision; the defaults are hand-set, `trace-guard calibrate` fits them."""

    # ACCEPT when confidence >= threshold; per scorer, since each scorer's confidence has its own scale.
    thresholds: dict[str, float] = field(
        default_factory=lambda: {"majority": 0.5, "deepconf": 0.5, "trace": 0.5}
    )
    default_threshold: float = 0.5
    # Paths "agree on the answer" when the winner's vote share reaches this.
    answer_agreement: float = 0.5
    # Paths of the winning cluster "agree on the sub-steps" when their mean ARS agreement reaches this.
    step_agreement: float = 0.6
    # A sub-question's mode is "well supported" (counts for FFS) when its agreement reaches this.
    ffs_agreement: float = 0.5
    # Where the policy came from (file path, calibration summary), for GetInfo and logs.
    source: str = "default"

    def threshold_for(self, scorer: str) -> float:
        return self.thresholds.get(scorer, self.default_threshold)

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        data = json.loads(Path(path).read_text())
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known - {"calibration"}
        if unknown:
            raise ValueError(f"policy file {path}: unknown keys {sorted(unknown)}")
        data.pop("calibration", None)
        data["source"] = str(path)
        return cls(**data)

    def dump(self, path: str | Path, **extra: object) -> None:
        Path(path).write_text(json.dumps({**asdict(self), **extra}, indent=2) + "\n")


@dataclass
class Verdict:
    decision: Decision
    region: Region
    abstain_reason: AbstainReason | None
    threshold: float


def region_of(selection: Selection, ars: ArsAnalysis | None, winner_paths: list[int], policy: Policy) -> Region:
    if selection.winner is None:
        return Region.NO_ANSWER
    if selection.is_tie or selection.vote_share < policy.answer_agreement:
        return Region.UNCERTAIN
    if ars is not None and ars.agreement_among(winner_paths) < policy.step_agreement:
        return Region.SILENT_RISK
    return Region.RELIABLE


def decide(
    selection: Selection, ars: ArsAnalysis | None, winner_paths: list[int], scorer: str, policy: Policy
) -> Verdict:
    threshold = policy.threshold_for(scorer)
    region = region_of(selection, ars, winner_paths, policy)
    if selection.winner is None:
        return Verdict(Decision.ABSTAIN, region, AbstainReason.NO_ANSWER, threshold)
    if selection.confidence >= threshold and not selection.is_tie:
        return Verdict(Decision.ACCEPT, region, None, threshold)
    if selection.is_tie:
        reason = AbstainReason.TIE
    elif region is Region.SILENT_RISK:
        reason = AbstainReason.SILENT_FAILURE
    else:
        reason = AbstainReason.LOW_CONFIDENCE
    return Verdict(Decision.ABSTAIN, region, reason, threshold)
