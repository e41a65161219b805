"""Scorers and selection: majority, DeepConf and TRACE weights, confidence, ties; policy regions and decisions."""

import pytest

from guard.answers import Answer, AnswerKind
from guard.consistency import analyze_ars
from guard.policy import Policy, decide
from guard.result import AbstainReason, Decision, Region
from guard.scorers import SCORERS, ScoringInput, select
from guard.scorers.deepconf import path_confidence


def ans(value: str | None) -> Answer | None:
    return None if value is None else Answer(value, value, AnswerKind.NUMBER)


def clusters_of(values):
    order: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        if v is not None:
            order.setdefault(v, []).append(i)
    return list(order.values())


def make_input(values, top_logprobs=(), ars=None):
    return ScoringInput([ans(v) for v in values], clusters_of(values), top_logprobs, ars)


@pytest.mark.parametrize(
    "values, winner_value, vote_share, confidence",
    [
        (["5", "5", "5", "6"], "5", 0.75, 0.75),
        (["5", "6", "6", None], "6", 0.5, 0.5),
        (["7", None, None, None], "7", 0.25, 0.25),
    ],
)
def test_majority(values, winner_value, vote_share, confidence):
    inp = make_input(values)
    sel = select(SCORERS["majority"], inp)
    assert inp.answers[inp.clusters[sel.winner][0]].normalized == winner_value
    assert sel.vote_share == pytest.approx(vote_share)
    assert sel.confidence == pytest.approx(confidence)


def test_no_answer_selects_nothing():
    sel = select(SCORERS["majority"], make_input([None, None]))
    assert sel.winner is None and sel.confidence == 0.0


def test_tie_is_flagged():
    sel = select(SCORERS["majority"], make_input(["1", "2"]))
    assert sel.is_tie


def test_deepconf_path_confidence_uses_lowest_window():
    confident = [[-0.01, -6.0]] * 40  # token confidence (0.01+6)/2 = 3.005
    shaky = [[-0.01, -6.0]] * 20 + [[-1.0, -1.2]] * 16 + [[-0.01, -6.0]] * 4
    assert path_confidence(confident) == pytest.approx(3.005)
    assert path_confidence(shaky, window=16) == pytest.approx(1.1)
    assert path_confidence([]) == 0.0


def test_deepconf_weights_confident_minority_over_shaky_majority():
    confident = [[-0.01, -8.0]] * 20
    shaky = [[-1.0, -1.1]] * 20
    inp = make_input(["5", "6", "6"], top_logprobs=[confident, shaky, shaky])
    scorer = SCORERS["deepconf"]
    sel = select(scorer, inp)
    # keep_fraction 0.9 of 3 answered keeps all 3; confident path weight ~4.0 vs 2 x 1.05.
    assert inp.answers[inp.clusters[sel.winner][0]].normalized == "5"
    assert 0 < sel.confidence < 1


def test_deepconf_drops_least_confident_paths():
    scorer = SCORERS["deepconf"].__class__(keep_fraction=0.5)
    high, low = [[-0.01, -8.0]] * 5, [[-2.0, -2.0]] * 5
    w = scorer.weights(make_input(["1", "1", "2", "2"], top_logprobs=[high, low, high, low]))
    assert w[1] == 0.0 and w[3] == 0.0 and w[0] > 0 and w[2] > 0


def test_trace_weights_by_support_and_flags_silent_failure():
    # Same final answer on every path, but the sub-steps disagree everywhere.
    values = ["9", "9", "9", "9"]
    ars = analyze_ars(["s1", "s2"], [["1", "2", "3", "4"], ["5", "6", "7", "8"]])
    inp = make_input(values, ars=ars)
    sel = select(SCORERS["trace"], inp)
    assert sel.vote_share == 1.0
    assert sel.confidence < 0.5
    verdict = decide(sel, ars, [0, 1, 2, 3], "trace", Policy())
    assert verdict.region is Region.SILENT_RISK
    assert verdict.decision is Decision.ABSTAIN
    assert verdict.abstain_reason is AbstainReason.SILENT_FAILURE
    # The majority baseline cannot see it.
    maj = select(SCORERS["majority"], inp)
    assert decide(maj, None, [0, 1, 2, 3], "majority", Policy()).decision is Decision.ACCEPT


def test_trace_prefers_well_supported_minority():
    # Paths 0-1 answer 10 with consistent steps; paths 2-4 answer 12 with steps that fit nobody.
    values = ["10", "10", "12", "12", "12"]
    ars = analyze_ars(
        ["s1", "s2"],
        [["4", "4", "4", "4", "3"], ["6", "6", "7", "8", "9"]],
    )
    inp = make_input(values, ars=ars)
    assert inp.answers[inp.clusters[select(SCORERS["majority"], inp).winner][0]].normalized == "12"
    sel = select(SCORERS["trace"], inp)
    assert inp.answers[inp.clusters[sel.winner][0]].normalized == "10"


def test_trace_without_ars_is_majority():
    inp = make_input(["5", "5", "6"])
    assert select(SCORERS["trace"], inp).confidence == pytest.approx(select(SCORERS["majority"], inp).confidence)


@pytest.mark.parametrize(
    "values, sub_answers, decision, region, reason",
    [
        (["5", "5", "5", "5"], [["1", "1", "1", "1"]], Decision.ACCEPT, Region.RELIABLE, None),
        (["5", "5", "6", "7", "8"], [["1", "1", "1", "1", "1"]], Decision.ABSTAIN, Region.UNCERTAIN, AbstainReason.LOW_CONFIDENCE),
        ([None, None, None, None], [["1", "1", "1", "1"]], Decision.ABSTAIN, Region.NO_ANSWER, AbstainReason.NO_ANSWER),
        (["5", "5", "6", "6"], [["1", "1", "1", "1"]], Decision.ABSTAIN, Region.UNCERTAIN, AbstainReason.TIE),
    ],
)
def test_decisions_and_regions(values, sub_answers, decision, region, reason):
    ars = analyze_ars([f"s{k}" for k in range(len(sub_answers))], sub_answers)
    inp = make_input(values, ars=ars)
    sel = select(SCORERS["trace"], inp)
    winner_paths = list(inp.clusters[sel.winner]) if sel.winner is not None else []
    verdict = decide(sel, ars, winner_paths, "trace", Policy())
    assert (verdict.decision, verdict.region, verdict.abstain_reason) == (decision, region, reason)


def test_policy_roundtrip(tmp_path):
    path = tmp_path / "policy.json"
    Policy(thresholds={"trace": 0.7}, step_agreement=0.4).dump(path, calibration={"alpha": 0.1})
    loaded = Policy.load(path)
    assert loaded.threshold_for("trace") == 0.7
    assert loaded.threshold_for("majority") == loaded.default_threshold
    assert loaded.step_agreement == 0.4
    assert loaded.source == str(path)
    path.write_text('{"nonsense": 1}')
    with pytest.raises(ValueError, match="nonsense"):
        Policy.load(path)
