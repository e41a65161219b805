"""Scorers and selection: majority, DeepConf and TRACE weights, confidence, ties; policy regions and decisions."""

import json

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
    Policy(thresholds={"trace": 0.7}, silent_risk=0.4, abstain_on_silent_risk=False).dump(
        path, calibration={"alpha": 0.1})
    assert "SILENT_RISK" in json.loads(path.read_text())["rule"]
    loaded = Policy.load(path)
    assert loaded.threshold_for("trace") == 0.7
    assert loaded.threshold_for("majority") == loaded.default_threshold
    assert loaded.silent_risk == 0.4 and loaded.abstain_on_silent_risk is False
    assert loaded.source == str(path)
    # Files written before the silent-risk gate name the same threshold step_agreement.
    path.write_text('{"step_agreement": 0.3}')
    assert Policy.load(path).silent_risk == 0.3
    path.write_text('{"nonsense": 1}')
    with pytest.raises(ValueError, match="nonsense"):
        Policy.load(path)


def test_silent_risk_gate_can_be_turned_off():
    values = ["9", "9", "9", "9"]
    ars = analyze_ars(["s1"], [["1", "2", "3", "4"]])
    inp = make_input(values, ars=ars)
    sel = select(SCORERS["trace"], inp)
    verdict = decide(sel, ars, [0, 1, 2, 3], "trace", Policy(abstain_on_silent_risk=False))
    assert verdict.region is Region.SILENT_RISK and verdict.decision is Decision.ACCEPT


def guarded(values, sub_answers, scorer="trace", soft=None, policy=None):
    """Run the decision core on one hand-built path set, as the pipeline does."""
    policy = policy or Policy()
    finals = [v or "" for v in values]
    ars = analyze_ars([f"s{k}" for k in range(len(sub_answers))], sub_answers, soft, final_answers=finals,
                      ffs_threshold=policy.ffs_agreement) if sub_answers else None
    inp = make_input(values, ars=ars)
    sel = select(SCORERS[scorer], inp)
    winner_paths = list(inp.clusters[sel.winner]) if sel.winner is not None else []
    verdict = decide(sel, ars, winner_paths, scorer, policy)
    answer = inp.answers[winner_paths[0]].normalized if winner_paths else None
    return sel, verdict, answer, ars


def test_no_readable_probe_answer_falls_back_to_the_vote():
    # Item 1: every probe cut or unreadable. Before: all supports 0, every cluster weighed 0, a 7-1
    # vote came back ABSTAIN/TIE at confidence 0.
    values = ["12"] * 7 + ["11"]
    sel, verdict, answer, ars = guarded(values, [[""] * 8, [""] * 8])
    assert not ars.informative
    assert (verdict.decision, answer, sel.is_tie) == (Decision.ACCEPT, "12", False)
    assert sel.confidence == pytest.approx(7 / 8)


def test_an_even_split_is_a_tie_whatever_the_path_order():
    # Item 2: 4 paths answer 21 and 4 answer 20, sub-answers split the same way. Before: trace
    # accepted whichever answer came first at confidence 0.5 as RELIABLE.
    values = ["21"] * 4 + ["20"] * 4
    subs = [["15"] * 4 + ["14"] * 4]
    for order in (list(range(8)), list(reversed(range(8)))):
        _sel, verdict, answer, _ = guarded([values[i] for i in order], [[subs[0][i] for i in order]])
        assert (verdict.decision, verdict.abstain_reason, verdict.region) == (
            Decision.ABSTAIN, AbstainReason.TIE, Region.UNCERTAIN)
        assert answer == "20"  # ties name the same answer in any order


def test_unanswered_probes_do_not_make_a_silent_risk():
    # Item 3: a 7-1 vote whose winning paths agree on the step, except the two that could not answer
    # it. Before: missing counted as departing and the request came out SILENT_RISK.
    values = ["12"] * 7 + ["11"]
    subs = [["5", "5", "5", "5", "5", "", "", "4"]]
    _sel, verdict, answer, ars = guarded(values, subs)
    assert (verdict.decision, verdict.region, answer) == (Decision.ACCEPT, Region.RELIABLE, "12")
    assert ars.first_failure_step == [None] * 7 + [1]
    assert ars.answered == [6]


def test_unanimous_answer_with_scattered_steps_abstains_as_silent_failure():
    # Item 4: an 8-0 vote whose intermediate values all differ. Before: confidence 0.90 and ACCEPT.
    values = ["30"] * 8
    subs = [[str(v) for v in range(8)], [str(v) for v in range(10, 18)], ["30"] * 8]
    _sel, verdict, _answer, ars = guarded(values, subs)
    assert ars.echo == [False, False, True]  # the last step only repeats the final answer
    assert (verdict.decision, verdict.abstain_reason, verdict.region) == (
        Decision.ABSTAIN, AbstainReason.SILENT_FAILURE, Region.SILENT_RISK)
    # The vote cannot see it.
    assert guarded(values, [], scorer="majority")[1].decision is Decision.ACCEPT


def test_deepconf_keeps_the_top_90_or_10_percent():
    # Item 6: at N=8 `deepconf` used to keep ceil(0.9 * 8) = 8 paths, filtering nothing.
    tokens = [[[-0.01, -(6.0 - 0.5 * i)]] * 10 for i in range(8)]  # path 0 the most confident, 7 the least
    inp = make_input(["5"] * 8, top_logprobs=tokens)
    high = SCORERS["deepconf"].weights(inp)
    assert high[7] == 0.0 and all(w > 0 for w in high[:7])
    low = SCORERS["deepconf-low"].weights(inp)
    assert low[0] > 0 and all(w == 0.0 for w in low[1:])  # at least one path, the most confident
