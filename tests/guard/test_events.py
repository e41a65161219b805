"""Events of a guarded request (the streaming API's core): order, provisional answer, retraction."""

from __future__ import annotations

import pytest

from guard.events import (
    ArsEvent,
    PathEvent,
    ProgressEvent,
    ProvisionalEvent,
    RetractReason,
    retraction,
)
from guard.params import GuardParams, Mode
from guard.pipeline import GuardPipeline
from guard.result import ArsSource, Decision
from guard.stages import Stage
from tests.scripted_engine import ScriptedEngine

PATHS = (" 4 + 3 = 7, 7 + 5 = 12.\nAnswer: 12",)


async def run_with_events(engine, **kwargs):
    seen = []
    result = await GuardPipeline(engine).run(GuardParams(question="q?", **kwargs), seen.append)
    return result, seen


async def test_events_come_in_order_and_the_decision_equals_the_unstreamed_one():
    params = {"num_paths": 4, "seed": 3, "sub_questions": ("How many after the first step?",)}
    engine = ScriptedEngine(paths=PATHS, probe=lambda p, s: "7")
    result, seen = await run_with_events(engine, **params)
    kinds = [type(t.event).__name__ for t in seen]
    # The request's own sub-questions are known at once; the first path's answer is the first thing after.
    assert kinds[0] == "ArsEvent" and kinds[1] == "ProvisionalEvent" and kinds.count("ProvisionalEvent") == 1
    assert kinds.count("PathEvent") == 4
    assert sorted(t.event.index for t in seen if isinstance(t.event, PathEvent)) == [0, 1, 2, 3]
    [ars] = [t.event for t in seen if isinstance(t.event, ArsEvent)]
    assert ars == ArsEvent(("How many after the first step?",), ArsSource.REQUEST)
    progress = [t.event for t in seen if isinstance(t.event, ProgressEvent)]
    stages = [e.stage for e in progress]
    assert stages[-2:] == [Stage.PROBE, Stage.DECIDE] and set(stages[:-2]) == {Stage.SAMPLE}
    # One event says sampling ended, and why: right before the request moves on.
    assert [e.stop_reason for e in progress][-3:] == ["fixed", "", ""]
    assert sum(1 for e in progress if e.stop_reason) == 1
    last = [t.event for t in seen if isinstance(t.event, ProgressEvent)][-1]
    assert last.leader.normalized == "12" and last.vote_share == 1.0 and last.paths_finished == 4
    assert [t.elapsed_ms for t in seen] == sorted(t.elapsed_ms for t in seen)
    # Streaming changes how the paths are sampled (one request each, seeds seed + i), not the verdict.
    plain = await GuardPipeline(ScriptedEngine(paths=PATHS, probe=lambda p, s: "7")).run(GuardParams(question="q?", **params))
    assert (result.decision, result.answer, result.confidence) == (plain.decision, plain.answer, plain.confidence)
    assert [p.text for p in result.paths] == [p.text for p in plain.paths]
    assert not result.sampling.adaptive and result.sampling.finished == 4
    assert retraction(seen[1].event, result) is None


async def test_a_fast_wrong_first_path_is_retracted_when_the_vote_disagrees():
    # The one-word path finishes first with 5; the three slower paths agree on 12.
    engine = ScriptedEngine(paths=(" Answer: 5", *(" so four plus three is seven and then twelve. Answer: 12",) * 3),
                            word_seconds=0.02)
    result, seen = await run_with_events(engine, num_paths=4, scorer="majority")
    provisional = seen[0].event
    assert isinstance(provisional, ProvisionalEvent) and provisional.answer.normalized == "5"
    assert result.decision is Decision.ACCEPT and result.answer.normalized == "12"
    assert retraction(provisional, result) is RetractReason.CHANGED


async def test_an_abstaining_decision_retracts_the_provisional_answer():
    engine = ScriptedEngine(paths=(" Answer: 5", " Answer: 6"))
    result, seen = await run_with_events(engine, num_paths=2, scorer="majority")
    assert result.decision is Decision.ABSTAIN
    assert retraction(seen[0].event, result) is RetractReason.ABSTAIN


async def test_the_provisional_answer_is_the_first_path_that_has_one():
    # The first path is cut at max_tokens (no answer); the provisional answer comes from the next one.
    engine = ScriptedEngine(paths=(" " + "word " * 20, " Answer: 9", " Answer: 9"), honor_max_tokens=True)
    _result, seen = await run_with_events(engine, num_paths=3, max_tokens=10, scorer="majority")
    provisionals = [t.event for t in seen if isinstance(t.event, ProvisionalEvent)]
    assert len(provisionals) == 1 and provisionals[0].answer.normalized == "9" and provisionals[0].path_index == 1
    path0 = next(t.event for t in seen if isinstance(t.event, PathEvent) and t.event.index == 0)
    assert path0.answer is None and path0.finish_reason == "length"


async def test_raw_mode_reports_its_one_path_and_never_retracts():
    result, seen = await run_with_events(ScriptedEngine(paths=(" Answer: 4",)), mode=Mode.RAW)
    assert [type(t.event) for t in seen] == [ProvisionalEvent, PathEvent]
    assert result.decision is Decision.RAW and retraction(seen[0].event, result) is None


@pytest.mark.parametrize("adaptive", [True, False])
async def test_adaptive_streaming_reports_only_the_paths_that_finished(adaptive):
    engine = ScriptedEngine(paths=PATHS)
    result, seen = await run_with_events(engine, num_paths=8, scorer="majority", adaptive=adaptive)
    reported = [t.event.index for t in seen if isinstance(t.event, PathEvent)]
    assert sorted(reported) == [p.index for p in result.paths]
    assert len(reported) == (4 if adaptive else 8)
    # The event that ends sampling says why: the vote settled, or all num_paths ran.
    [ended] = [t.event for t in seen if isinstance(t.event, ProgressEvent) and t.event.stop_reason]
    assert ended.stop_reason == ("settled" if adaptive else "fixed") and ended.paths_finished == len(reported)
