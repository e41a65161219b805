"""Decision policy: maps the winner's features to a confidence region and ACCEPT / ABSTAIN with a reason."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from guard.consistency import ArsAnalysis
from guard.result import AbstainReason, Decision, Region
from guard.scorers import SCORER_NAMES, Selection

# The rule `decide` applies, written into calibrated policy files so a reader knows what was certified.
DEPLOYED_RULE = (
    "ACCEPT when an answer exists, it is not tied, its region is not SILENT_RISK (unless "
    "abstain_on_silent_risk is false) and confidence >= the scorer's threshold"
)

# The hand-set acceptance threshold of every scorer until `trace-guard calibrate` fits one.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Policy:
    """Thresholds of the decision; the defaults are hand-set, `trace-guard calibrate` fits them."""

    # ACCEPT when confidence >= threshold; per scorer, since each scorer's confidence has its own scale.
    thresholds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(SCORER_NAMES, DEFAULT_THRESHOLD)
    )
    default_threshold: float = DEFAULT_THRESHOLD
    # Paths "agree on the answer" when the winner's vote share is above this (an even split is not
    # agreement).
    answer_agreement: float = 0.5
    # Paths that agree on the answer are at SILENT_RISK when their mean agreement on the non-echo
    # sub-steps is below this: TRACE's silent failure.
    silent_risk: float = 0.6
    # Whether SILENT_RISK abstains (reason SILENT_FAILURE) whatever the confidence.
    abstain_on_silent_risk: bool = True
    # A sub-question's mode is "well supported" (counts for FFS) when its agreement is above this.
    ffs_agreement: float = 0.5
    # Where the policy came from (file path, calibration summary), for GetInfo and logs.
    source: str = "default"

    def threshold_for(self, scorer: str) -> float:
        return self.thresholds.get(scorer, self.default_threshold)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        data = json.loads(Path(path).read_text())
        if "step_agreement" in data and "silent_risk" not in data:
            data["silent_risk"] = data.pop("step_agreement")  # the name before the silent-risk gate
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known - {"calibration", "rule"}
        if unknown:
            raise ValueError(f"policy file {path}: unknown keys {sorted(unknown)}")
        data.pop("calibration", None)
        data.pop("rule", None)
        data["source"] = str(path)
        return cls(**data)

    def dump(self, path: str | Path, **extra: object) -> None:
        Path(path).write_text(json.dumps({**asdict(self), "rule": DEPLOYED_RULE, **extra}, indent=2) + "\n")


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    region: Region
    abstain_reason: AbstainReason | None
    threshold: float
    # Why the answer abstains whatever its confidence (no answer, tie, silent failure); None when the
    # confidence alone decides. Calibration certifies the threshold on the items without a gate.
    gate: AbstainReason | None = None


def region_of(selection: Selection, ars: ArsAnalysis | None, winner_paths: list[int], policy: Policy) -> Region:
    if selection.winner is None:
        return Region.NO_ANSWER
    if selection.is_tie or selection.vote_share <= policy.answer_agreement:
        return Region.UNCERTAIN
    step_agreement = ars.agreement_among(winner_paths) if ars is not None else None
    if step_agreement is not None and step_agreement < policy.silent_risk:
        return Region.SILENT_RISK
    return Region.RELIABLE


def decide(
    selection: Selection, ars: ArsAnalysis | None, winner_paths: list[int], scorer: str, policy: Policy
) -> Verdict:
    threshold = policy.threshold_for(scorer)
    region = region_of(selection, ars, winner_paths, policy)
    gate = None
    if selection.winner is None:
        gate = AbstainReason.NO_ANSWER
    elif selection.is_tie:
        gate = AbstainReason.TIE
    elif region is Region.SILENT_RISK and policy.abstain_on_silent_risk:
        gate = AbstainReason.SILENT_FAILURE
    if gate is not None:
        return Verdict(Decision.ABSTAIN, region, gate, threshold, gate)
    if selection.confidence >= threshold:
        return Verdict(Decision.ACCEPT, region, None, threshold)
    reason = AbstainReason.SILENT_FAILURE if region is Region.SILENT_RISK else AbstainReason.LOW_CONFIDENCE
    return Verdict(Decision.ABSTAIN, region, reason, threshold)
