"""Certification replays the deployed rule: items a gate abstains on are never counted as accepted."""

import pytest

from guard import replay
from guard.certify import ACCEPT_NOTHING, certify
from guard.policy import Policy


def record(pid: str, gold: str, answer: str, steps: list[str]) -> replay.Record:
    return replay.Record(
        problem_id=pid, gold=gold, answers=[(answer, answer, "number")] * len(steps), top_logprobs=[],
        sub_questions=["How many after the first step?"], ars_source="request", path_answers=[steps],
        soft=None, gold_sub_answers=[], latency_ms=0.0, generated_tokens=0,
    )


# Unanimous and right, with agreeing steps; unanimous and wrong, with scattered steps (silent failure).
GOOD = [record(f"good{i}", "7", "7", ["3", "3", "3", "3"]) for i in range(60)]
SILENT = [record(f"silent{i}", "8", "9", ["1", "2", "3", "4"]) for i in range(20)]


def test_certify_counts_only_what_the_server_would_accept():
    # Both kinds have trace confidence 1.0 (no step has a mode, so trace is the vote on the silent
    # ones). A confidence cut would accept the 20 wrong ones and certify nothing at 10% risk; the
    # deployed rule abstains on them, so the threshold is certified on the 60 right ones.
    cert = certify(GOOD + SILENT, "trace", Policy(), target_risk=0.1, delta=0.1, fit_all=True)
    assert cert.summary["gated_items"] == 20
    assert cert.result.feasible and cert.summary["fit_risk"] == 0.0
    assert cert.summary["fit_coverage"] == pytest.approx(60 / 80)
    assert cert.policy.threshold_for("trace") == 1.0


def test_without_the_gate_the_same_records_certify_nothing():
    cert = certify(GOOD + SILENT, "trace", Policy(abstain_on_silent_risk=False), target_risk=0.1, delta=0.1,
                   fit_all=True)
    assert cert.summary["gated_items"] == 0 and not cert.result.feasible
    assert cert.policy.threshold_for("trace") == ACCEPT_NOTHING


def test_merge_keeps_one_record_per_problem():
    merged = replay.merge([GOOD[:10], GOOD[5:15]])
    assert sorted(r.problem_id for r in merged) == sorted(f"good{i}" for i in range(15))
    with pytest.raises(ValueError, match="good0"):
        replay.merge([GOOD[:1], [record("good0", "7", "6", ["3", "3", "3", "3"])]])
