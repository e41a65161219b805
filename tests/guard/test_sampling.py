"""Adaptive sampling: the Beta stopping rule, the path stream on the scripted engine, and the pipeline."""

from __future__ import annotations

import asyncio

import pytest

from guard.answers import extract_answer
from guard.engine import Prompt, SampleSpec
from guard.errors import InvalidArgumentError
from guard.params import GuardParams
from guard.pipeline import GuardPipeline
from guard.sampling import SamplingReport, StopReason, StopRule, leader_stays_probability, sample_stream
from tests.scripted_engine import ScriptedEngine


def read(text: str, truncated: bool):
    return None if truncated else extract_answer(text)


@pytest.mark.parametrize(
    ("leader", "runner_up", "expected"),
    [
        (0, 0, 0.5),          # no evidence: a coin flip
        (4, 0, 31 / 32),      # Beta(5, 1): 1 - 0.5**5
        (3, 0, 15 / 16),
        (3, 1, 0.8125),       # Beta(4, 2)
        (6, 1, 1 - 9 / 256),  # Beta(7, 2)
        (4, 4, 0.5),          # a tie stays a coin flip
    ],
)
def test_leader_stays_probability_is_the_beta_tail(leader, runner_up, expected):
    assert leader_stays_probability(leader, runner_up) == pytest.approx(expected)


def test_leader_stays_probability_grows_with_the_lead():
    values = [leader_stays_probability(a, 2) for a in range(2, 12)]
    assert values == sorted(values) and values[-1] > 0.99


def answers(*values):
    return [None if v is None else extract_answer(f"Answer: {v}") for v in values]


@pytest.mark.parametrize(
    ("finished", "stop", "settled"),
    [
        (("7", "7", "7", "7"), True, True),           # unanimous start: stops at min_paths
        (("7", "7", "7"), False, False),              # below min_paths, however unanimous
        (("7", "7", "7", "8"), False, False),         # 3-1: P = 0.81 < 0.95
        (("7",) * 6 + ("8",), True, True),            # 6-1: P = 0.965
        (("7", "8") * 4, True, False),                # split vote runs to max_paths, unsettled
        ((None, None, None, None), False, False),     # no answers, no leader: go on
        (("7", "7.0", "14/2", "7"), True, True),      # equivalent spellings are one answer
    ],
)
def test_stop_rule_table(finished, stop, settled):
    check = StopRule(min_paths=4, max_paths=8, level=0.95).check(answers(*finished))
    assert (check.stop, check.settled) == (stop, settled)


async def stream(engine, *, max_paths=8, min_paths=4, parallel=4, seed=10, watch=None):
    spec = SampleSpec(n=max_paths, temperature=0.7, max_tokens=64, seed=seed, logprobs=2 if watch else None)
    return await sample_stream(
        engine, Prompt("Question: q\nSolution:"), spec, "req", StopRule(min_paths, max_paths, 0.95), parallel, read,
        watch=watch,
    )


async def test_unanimous_start_stops_at_min_paths():
    engine = ScriptedEngine(paths=("3 + 4 = 7. Answer: 7",))
    out = await stream(engine)
    assert [k for k, _ in engine.calls] == ["sample"] * 4
    assert out.report == SamplingReport(True, StopReason.SETTLED, 8, 4, 4, 0, 31 / 32)
    assert len(out.result.completions) == 4
    # Every path its own engine request with its own seed, so a request's paths are reproducible.
    assert sorted(spec.seed for _, spec in engine.specs) == [10, 11, 12, 13]
    assert {spec.n for _, spec in engine.specs} == {1}


async def test_split_vote_runs_to_max_paths():
    engine = ScriptedEngine(paths=("Answer: 7", "Answer: 8"))
    out = await stream(engine)
    assert len(engine.calls) == 8
    assert out.report.stop_reason is StopReason.MAX_PATHS
    assert (out.report.started, out.report.finished, out.report.aborted) == (8, 8, 0)
    # Start order is kept: path i is the i-th path started.
    assert [c.text for c in out.result.completions] == ["Answer: 7", "Answer: 8"] * 4


async def test_never_starts_more_paths_than_the_vote_could_need():
    # Up to 8 at once, but a unanimous start needs only 4; after 3-1 it takes 3 more agreeing paths
    # (6-1: P = 0.965), so 3 more start, they agree, and the vote settles at 7 with nothing wasted.
    engine = ScriptedEngine(paths=("Answer: 7", "Answer: 7", "Answer: 7", "Answer: 9", "Answer: 7", "Answer: 7",
                                   "Answer: 7", "Answer: 7"))
    out = await stream(engine, parallel=8)
    assert out.report == SamplingReport(True, StopReason.SETTLED, 8, 7, 7, 0, 1 - 9 / 256)
    assert engine.cancelled == []


@pytest.mark.parametrize(
    ("finished", "needed"),
    [
        ((), 4),                          # nothing yet: four agreeing paths would settle it
        (("7", "7"), 4),
        (("7", "7", "7", "9"), 7),        # 3-1: three more agreeing (6-1)
        (("7", "9"), 7),                  # 1-1: five more agreeing (6-1: P = 0.965)
        (("7", "8") * 4, 8),              # split at the cap
    ],
)
def test_paths_needed_assumes_every_new_path_agrees_with_the_leader(finished, needed):
    rule = StopRule(min_paths=4, max_paths=8, level=0.95)
    check = rule.check(answers(*finished))
    assert rule.paths_needed(check, len(finished)) == needed


@pytest.mark.parametrize("streamed", [False, True])
async def test_cancelling_the_caller_aborts_every_running_path(streamed):
    # streamed: paths followed token by token (the confidence abort), through Engine.stream.
    from guard.confidence_abort import AbortRule, ConfidenceWatch

    engine = ScriptedEngine(paths=("Answer: 7",), hang_on=frozenset({"sample"}))
    watch = ConfidenceWatch(AbortRule(4)) if streamed else None
    task = asyncio.ensure_future(stream(engine, parallel=3, watch=watch))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.cancelled == ["sample"] * 3 and engine.in_flight == 0


async def test_an_engine_error_fails_the_stream_and_aborts_the_rest():
    from guard.errors import EngineError

    engine = ScriptedEngine(paths=("Answer: 7",), fail=EngineError("boom"), fail_on=frozenset({"sample"}))
    with pytest.raises(EngineError):
        await stream(engine)
    assert engine.in_flight == 0


async def test_pipeline_adaptive_request_reports_its_sampling():
    engine = ScriptedEngine(paths=("3 + 4 = 7. Answer: 7",))
    pipeline = GuardPipeline(engine)
    result = await pipeline.run(GuardParams(question="q?", num_paths=8, scorer="majority", adaptive=True, seed=1))
    assert result.sampling is not None and result.sampling.adaptive
    assert result.sampling.stop_reason is StopReason.SETTLED
    assert (result.sampling.finished, result.sampling.not_started) == (4, 4)
    assert len(result.paths) == 4 and [p.index for p in result.paths] == [0, 1, 2, 3]
    assert result.answer is not None and result.answer.normalized == "7"
    assert result.usage["sample"].generated_tokens == sum(p.num_tokens for p in result.paths)


async def test_pipeline_fixed_sampling_is_one_request():
    engine = ScriptedEngine(paths=("Answer: 7",))
    result = await GuardPipeline(engine).run(GuardParams(question="q?", num_paths=8, scorer="majority"))
    assert [c for c in engine.calls if c[0] == "sample"] == [("sample", 8)]
    assert result.sampling == SamplingReport.fixed(8)


async def test_min_paths_above_num_paths_is_capped():
    engine = ScriptedEngine(paths=("Answer: 7",))
    result = await GuardPipeline(engine).run(
        GuardParams(question="q?", num_paths=3, min_paths=6, scorer="majority", adaptive=True)
    )
    assert result.sampling.finished == 3 and result.sampling.stop_reason is StopReason.MAX_PATHS


@pytest.mark.parametrize(
    ("field", "value"),
    [("min_paths", 0), ("min_paths", 65), ("parallel_paths", 0), ("stop_level", 0.5), ("stop_level", 1.01),
     ("stop_level", float("nan")), ("adaptive", "yes")],
)
def test_adaptive_knobs_are_validated(field, value):
    with pytest.raises(InvalidArgumentError) as err:
        GuardParams(question="q?", **{field: value})
    assert err.value.field == field


@pytest.mark.parametrize(
    "report, saved",
    [
        # Adaptive: 4 of 8 never started, at a mean of 10 tokens.
        (SamplingReport(True, StopReason.SETTLED, 8, 4, 4, 0), 40.0),
        # Fixed N with two low-confidence aborts at 3 and 5 tokens: 7 + 5 tokens of their tails.
        (SamplingReport(False, StopReason.FIXED, 8, 8, 6, 0, aborted_low_confidence=2, low_confidence_tokens=8), 12.0),
        # An aborted path already longer than the mean saved nothing (never a negative saving).
        (SamplingReport(False, StopReason.FIXED, 8, 8, 7, 0, aborted_low_confidence=1, low_confidence_tokens=25), 0.0),
        # Fixed N, nothing aborted: nothing saved.
        (SamplingReport.fixed(8), 0.0),
    ],
)
def test_tokens_saved_against_the_fixed_plan(report, saved):
    assert report.tokens_saved(10.0) == saved


async def test_a_low_confidence_abort_accounts_for_its_prompt():
    from guard.confidence_abort import AbortRule, ConfidenceWatch
    from tests.scripted_engine import UNSURE_WORD

    sure = "3 + 4 = 7. Answer: 7"
    unsure = " ".join([UNSURE_WORD] * 30) + " Answer: 9"
    engine = ScriptedEngine(paths=(sure, sure, sure, sure, unsure, sure, sure, sure), word_seconds=0.001)
    watch = ConfidenceWatch(AbortRule(4, window=4))
    out = await stream(engine, min_paths=8, parallel=8, watch=watch)
    assert out.report.aborted_low_confidence == 1
    assert out.result.prompt_tokens == 3 * out.report.started
