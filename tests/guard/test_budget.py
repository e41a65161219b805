"""Latency budgets: the cost model, and the pipeline skipping or cutting short optional stages."""

import time

import pytest

from guard.budget import Budget, StageCostModel
from guard.errors import InvalidArgumentError
from guard.params import GuardParams
from guard.pipeline import GuardPipeline
from guard.result import ArsSource, Decision
from tests.scripted_engine import ScriptedEngine

GOOD = " He has 7 + 5 = 12 apples.\nAnswer: 12"
SUBS = ("How many at first?", "How many bought?")


def split_probe(path: str, sub: str) -> str:
    # Paths disagree on the first sub-question, so scoring has candidates to weigh.
    return {"How many at first?": "7", "How many bought?": "5"}[sub] if "12" in path else "3"


def params(**kw) -> GuardParams:
    base = {"question": "Tom has 7 apples and buys 5. How many?", "num_paths": 4, "sub_questions": SUBS}
    base.update(kw)
    return GuardParams(**base)


def test_cost_model_learns_per_item_cost():
    costs = StageCostModel(alpha=0.5)
    assert costs.estimate_ms("probe", 8) is None
    costs.observe("probe", 8, 80.0)  # 10 ms per item
    assert costs.estimate_ms("probe", 4) == pytest.approx(40.0)
    costs.observe("probe", 4, 80.0)  # 20 ms per item; EWMA halfway
    assert costs.estimate_ms("probe", 1) == pytest.approx(15.0)
    costs.observe("probe", 0, 5.0)  # ignored
    assert costs.estimate_ms("score", 3) is None


def test_budget_remaining():
    assert Budget.from_ms(None).remaining_ms() == float("inf") and not Budget.from_ms(None).limited
    b = Budget.from_ms(1000, start=time.monotonic() - 0.4)
    assert b.limited and 500 < b.remaining_ms() <= 600


def test_budget_validation_names_the_field():
    with pytest.raises(InvalidArgumentError) as err:
        params(latency_budget_ms=0)
    assert err.value.field == "latency_budget_ms"
    with pytest.raises(InvalidArgumentError):
        params(latency_budget_ms=10**9)


async def test_no_budget_runs_every_stage():
    # Three paths against one, so every sub-question has a mode and the ARS is informative.
    engine = ScriptedEngine(paths=[GOOD, GOOD, GOOD, " 1 + 2 = 3\nAnswer: 3"], probe=split_probe)
    result = await GuardPipeline(engine).run(params(score_mode="full"))
    assert result.degraded_stages == [] and result.notes == []
    kinds = {k for k, _ in engine.calls}
    assert {"probe", "score"} <= kinds


async def test_slow_probing_is_cut_short_and_the_answer_still_comes_back():
    engine = ScriptedEngine(paths=[GOOD], probe=split_probe, kind_delay={"probe": 5.0})
    start = time.perf_counter()
    result = await GuardPipeline(engine).run(params(latency_budget_ms=300))
    elapsed = time.perf_counter() - start
    assert elapsed < 4.0  # far below the 5 s probe: the probe was abandoned, not awaited
    assert result.degraded_stages == ["probe", "score"]
    assert any("probing cut short" in n for n in result.notes)
    assert result.decision is Decision.ACCEPT and result.answer.normalized == "12"
    assert result.ars_source is ArsSource.NONE and result.sub_questions == []
    assert engine.in_flight == 0  # the cut probes were cancelled, not left running


async def test_slow_scoring_is_cut_short_and_hard_agreement_is_used():
    engine = ScriptedEngine(paths=[GOOD, " 1 + 2 = 3\nAnswer: 3", GOOD], probe=split_probe,
                            kind_delay={"score": 5.0})
    result = await GuardPipeline(engine).run(params(num_paths=3, latency_budget_ms=300, score_mode="contested"))
    assert result.degraded_stages == ["score"]
    assert any("scoring cut short" in n for n in result.notes)
    assert result.ars_source is ArsSource.REQUEST
    # Hard agreement: 2 of 3 paths say 7 on the first sub-question; soft equals hard without scores.
    assert result.sub_questions[0].agreement == pytest.approx(2 / 3)
    assert result.sub_questions[0].soft_agreement == pytest.approx(2 / 3)
    assert engine.in_flight == 0


async def test_known_cost_skips_probing_without_starting_it():
    engine = ScriptedEngine(paths=[GOOD], probe=split_probe, kind_delay={"probe": 0.05})
    pipeline = GuardPipeline(engine)
    await pipeline.run(params())  # learns the probe cost (about 50 ms for the whole batch)
    probes_before = sum(1 for k, _ in engine.calls if k == "probe")
    # Pretend probing is very expensive: the next budgeted request must not even start it.
    pipeline.costs.observe("probe", 1, 1e6)
    pipeline.costs.observe("probe", 1, 1e6)
    pipeline.costs.observe("probe", 1, 1e6)
    result = await pipeline.run(params(latency_budget_ms=2000))
    assert sum(1 for k, _ in engine.calls if k == "probe") == probes_before
    assert result.degraded_stages == ["probe", "score"]
    assert any("skipped probing and scoring" in n and "ms needed" in n for n in result.notes)


async def test_known_cost_skips_scoring_only():
    engine = ScriptedEngine(paths=[GOOD, GOOD, GOOD, " 1 + 2 = 3\nAnswer: 3"], probe=split_probe)
    pipeline = GuardPipeline(engine)
    pipeline.costs.observe("score", 1, 1e6)
    result = await pipeline.run(params(latency_budget_ms=5000, score_mode="full"))
    assert result.degraded_stages == ["score"]
    assert "score" not in {k for k, _ in engine.calls} and "probe" in {k for k, _ in engine.calls}
    assert any("skipped scoring" in n for n in result.notes)


async def test_slow_ars_generation_is_cut_short():
    engine = ScriptedEngine(paths=[GOOD], kind_delay={"ars": 5.0})
    result = await GuardPipeline(engine).run(params(sub_questions=(), latency_budget_ms=300))
    assert result.degraded_stages == ["ars"]
    assert result.ars_source is ArsSource.NONE
    assert result.decision is Decision.ACCEPT and result.answer.normalized == "12"
    assert engine.in_flight == 0


async def test_probe_prompts_over_the_context_degrade_to_answer_only():
    from guard.errors import InvalidArgumentError as Invalid

    engine = ScriptedEngine(paths=[GOOD], probe=split_probe, fail=Invalid("question", "too long"),
                            fail_on=frozenset({"probe"}))
    result = await GuardPipeline(engine).run(params())
    assert result.degraded_stages == ["probe", "score"]
    assert any("do not fit the model's context" in n for n in result.notes)
    assert result.answer.normalized == "12" and result.ars_source is ArsSource.NONE
