"""Probing each path as it ends: the early probes equal the batch, start before the last path ends, and
are cancelled with the request."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from guard.params import GuardParams
from guard.pipeline import GuardPipeline
from guard.probe import probe_paths
from guard.probe_ahead import ProbeAhead, merge_probes
from guard.prompts import PromptBuilder, PromptStyle
from guard.result import PhaseUsage
from tests.scripted_engine import ScriptedEngine

QUESTION = "Tom has 7 apples and buys 5 more. How many apples does he have?"
SUBS = ("How many apples at first?", "How many does he buy?")
PATHS = (" 7 + 5 = 12.\nAnswer: 12", " 7 and 5 make 13.\nAnswer: 13", " he has 7, buys 5: 12.\nAnswer: 12")


def probe(path: str, sub: str) -> str:
    return "7" if "first" in sub else ("5" if "13" not in path else "6")


async def _probe(engine, texts, usage):
    prompts = PromptBuilder(PromptStyle.FEWSHOT, engine.render_chat)
    return await probe_paths(engine, prompts, QUESTION, texts, SUBS, system_prompt="", images=[], max_tokens=16,
                             request_id="r", usage=usage)


async def test_merged_single_path_probes_equal_one_batch():
    engine = ScriptedEngine(probe=probe)
    batch = await _probe(engine, list(PATHS), PhaseUsage())
    singles = [await _probe(engine, [text], PhaseUsage()) for text in PATHS]
    merged = merge_probes(singles)
    assert merged.answers == batch.answers == [["7", "7", "7"], ["5", "6", "5"]]
    assert merged.surface == batch.surface
    assert merged.asked == batch.asked == [True, True] and merged.requests == batch.requests == 6
    assert [[p.text for p in row] for row in merged.prompts] == [[p.text for p in row] for row in batch.prompts]


async def test_paths_ending_before_the_sub_questions_are_probed_once_they_are_known():
    engine = ScriptedEngine(probe=probe)
    ahead = ProbeAhead(lambda text, subs, usage: _probe(engine, [text], usage))
    from guard.engine import Completion

    ahead.path_finished(0, Completion(PATHS[0], 3, "stop"), None, None)
    assert not ahead.covers(SUBS)
    ahead.know(SUBS)
    ahead.path_finished(1, Completion(PATHS[1], 3, "stop"), None, None)
    ahead.path_finished(2, Completion(PATHS[0], 3, "stop"), None, None)   # equal text: probed once
    assert ahead.covers(SUBS) and not ahead.covers(SUBS[:1])
    outcome = await ahead.collect([PATHS[0], PATHS[1], PATHS[0], PATHS[2]])
    assert outcome.answers == [["7", "7", "7", "7"], ["5", "6", "5", "5"]]
    # Three distinct texts, two sub-questions each: one probe request per (text, sub-question).
    assert [k for k, _ in engine.calls].count("probe") == 6
    assert outcome.requests == 6 and outcome.asked == [True, True]
    assert ahead.usage.prompt_tokens > 0


@pytest.mark.parametrize("streamed", [False, True])
async def test_pipeline_probes_early_paths_before_the_last_path_ends(streamed):
    # The fourth path is long: the first three end early, and their probes run while it is generated.
    long_path = " " + " ".join(["so"] * 60) + " 7 + 5 = 12.\nAnswer: 12"
    engine = ScriptedEngine(paths=(*PATHS, long_path), probe=probe, word_seconds=0.002)
    params = GuardParams(QUESTION, sub_questions=SUBS, num_paths=4, scorer="trace", seed=1,
                         confidence_abort=not streamed)
    events = [] if streamed else None
    result = await GuardPipeline(engine).run(params, events.append if streamed else None)
    kinds = [k for k, _ in engine.calls]
    last_sample = len(kinds) - 1 - kinds[::-1].index("sample")
    assert "probe" in kinds[:last_sample], kinds
    assert result.usage["probe"].prompt_tokens > 0
    answers = [row.path_answers for row in result.sub_questions]
    assert answers == [["7", "7", "7", "7"], ["5", "6", "5", "5"]]


async def test_the_probe_ahead_setting_samples_a_probing_requests_paths_one_by_one():
    from guard.pipeline import GuardConfig

    long_path = " " + " ".join(["so"] * 60) + " 7 + 5 = 12.\nAnswer: 12"
    engine = ScriptedEngine(paths=(*PATHS, long_path), probe=probe, word_seconds=0.002)
    pipeline = GuardPipeline(engine, GuardConfig(probe_ahead=True))
    params = GuardParams(QUESTION, sub_questions=SUBS, num_paths=4, scorer="trace", seed=1)
    result = await pipeline.run(params)
    kinds = [k for k, _ in engine.calls]
    # Four single-path requests, and probes of the paths that ended before the long one.
    assert [n for k, n in engine.calls if k == "sample"] == [1, 1, 1, 1]
    last_sample = len(kinds) - 1 - kinds[::-1].index("sample")
    assert "probe" in kinds[:last_sample], kinds
    assert not result.sampling.adaptive and result.sampling.stop_reason.value == "fixed"
    assert [row.path_answers for row in result.sub_questions] == [["7", "7", "7", "7"], ["5", "6", "5", "5"]]
    batch = await GuardPipeline(ScriptedEngine(paths=(*PATHS, long_path), probe=probe)).run(params)
    assert (result.answer, result.decision, result.confidence) == (batch.answer, batch.decision, batch.confidence)

    # Requests that do not probe, or whose budget may yet skip probing, keep one n=N request.
    for other in (replace(params, scorer="majority"), replace(params, latency_budget_ms=60_000),
                  replace(params, max_total_tokens=10_000)):
        engine.calls.clear()
        await pipeline.run(other)
        assert [n for k, n in engine.calls if k == "sample"] == [4], other


async def test_early_probes_decide_as_the_batch_does():
    engine = ScriptedEngine(paths=PATHS, probe=probe)
    params = GuardParams(QUESTION, sub_questions=SUBS, num_paths=3, scorer="trace", seed=1)
    batch = await GuardPipeline(engine).run(params)
    streamed = await GuardPipeline(ScriptedEngine(paths=PATHS, probe=probe)).run(params, lambda e: None)
    assert streamed.answer == batch.answer and streamed.decision == batch.decision
    assert streamed.confidence == pytest.approx(batch.confidence)
    assert [p.support for p in streamed.paths] == [p.support for p in batch.paths]


async def test_no_early_probes_under_a_latency_budget():
    engine = ScriptedEngine(paths=PATHS, probe=probe)
    pipeline = GuardPipeline(engine)
    params = GuardParams(QUESTION, sub_questions=SUBS, num_paths=3, scorer="trace", latency_budget_ms=60_000)
    assert pipeline._probe_ahead(params, [], streamed=True) is None
    assert pipeline._probe_ahead(GuardParams(QUESTION, num_paths=3, scorer="majority"), [], streamed=True) is None
    assert pipeline._probe_ahead(GuardParams(QUESTION, num_paths=3, scorer="trace"), [], streamed=False) is None
    assert pipeline._probe_ahead(GuardParams(QUESTION, num_paths=3, scorer="trace"), [], streamed=True) is not None


async def test_cancelling_the_request_cancels_early_probes():
    engine = ScriptedEngine(paths=(PATHS[0], " " + " ".join(["so"] * 500) + " Answer: 12"), probe=probe,
                            word_seconds=0.002, hang_on=frozenset({"probe"}))
    task = asyncio.ensure_future(GuardPipeline(engine).run(
        GuardParams(QUESTION, sub_questions=SUBS, num_paths=2, scorer="trace"), lambda e: None))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if engine.in_flight >= 2:   # the long path and a hanging early probe
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert "probe" in engine.cancelled and engine.in_flight == 0
