"""Certifies the deployed decision rule on labelled records: replayed decisions, fit and held-out splits."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from guard import replay
from guard.calibration import CalibrationResult, check_splits, fit_on_split, fit_threshold, risk_and_coverage
from guard.policy import DEPLOYED_RULE, Policy

# Threshold written for a scorer when nothing could be certified: above any confidence, accepts nothing.
ACCEPT_NOTHING = 1.01


@dataclass(frozen=True)
class Certification:
    policy: Policy
    result: CalibrationResult
    summary: dict


def _nan_to_none(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def certify(
    records: Sequence[replay.Record], scorer: str, base: Policy, *, target_risk: float, delta: float,
    fit_fraction: float = 0.5, seed: int = 0, splits: int = 1, fit_all: bool = False,
) -> Certification:
    """Fit `scorer`'s threshold so that the whole deployed rule keeps its risk under `target_risk`.

    Each record is replayed through `decide` with the base policy's gates; items a gate abstains on
    whatever the threshold (tie, silent failure, no answer) are never accepted, so the certified risk
    is that of what the server accepts. `fit_all` certifies on every record (the same Learn-then-Test
    guarantee, more items, but no held-out estimate); otherwise on a seeded split with the rest held out.
    """
    outcomes = [replay.rescore(r, scorer, base) for r in records]
    conf = [o.gated_confidence for o in outcomes]
    correct = [o.correct for o in outcomes]
    summary: dict = {
        "scorer": scorer, "rule": DEPLOYED_RULE, "target_risk": target_risk, "delta": delta,
        "items": len(outcomes), "gated_items": sum(not o.eligible for o in outcomes),
        "base_accuracy": sum(correct) / len(correct) if correct else 0.0, "fit_all": fit_all,
    }
    if fit_all:
        result = fit_threshold(conf, correct, target_risk, delta)
        risk, coverage = risk_and_coverage(conf, correct, result.threshold)
        summary.update(fit_items=len(conf), fit_risk=risk, fit_coverage=coverage)
    else:
        fitted = fit_on_split(conf, correct, target_risk, delta, fit_fraction, seed)
        result = fitted.result
        summary.update(
            fit_items=fitted.fit_items, held_out_items=fitted.held_out_items, fit_risk=fitted.fit_risk,
            fit_coverage=fitted.fit_coverage, held_out_risk=fitted.held_out_risk,
            held_out_coverage=fitted.held_out_coverage,
        )
    threshold = result.threshold if result.feasible else ACCEPT_NOTHING
    summary.update(feasible=result.feasible, threshold=threshold, fit_risk_upper_bound=result.fit_risk_bound)
    if splits > 1 and not fit_all:
        # The same procedure refitted on other random splits: how often the held-out risk meets the target.
        check = check_splits(conf, correct, target_risk, delta, fit_fraction, range(seed, seed + splits))
        summary["resplits"] = {k: _nan_to_none(v) for k, v in dataclasses.asdict(check).items()}
    policy = dataclasses.replace(base, thresholds={**base.thresholds, scorer: threshold}, source="default")
    return Certification(policy, result, summary)
