"""`Engine.stream` on the real vLLM engine: a path token by token, the same path `generate` samples, an
early close that aborts the engine request, and the confidence abort end to end."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from guard.engine import Prompt, SampleSpec
from guard.params import GuardParams
from guard.pipeline import GuardPipeline

PROMPT = Prompt("Question: Tom has 7 apples and buys 5 more. How many apples does he have?\nSolution:")


@pytest.fixture(scope="module")
def engine(in_process_engine):
    return in_process_engine


async def _idle(engine, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if engine.num_running_requests() == 0:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_stream_reports_tokens_as_they_come_and_ends_with_generates_path(engine):
    spec = SampleSpec(n=1, temperature=0.7, max_tokens=48, seed=3, logprobs=5)
    updates = [u async for u in engine.stream(PROMPT, spec, "stream-vs-generate")]
    assert updates[-1].result is not None and all(u.result is None for u in updates[:-1])
    # More than one update: tokens arrive while the path is generated, not only at its end.
    assert len(updates) > 1
    counts = [u.num_tokens for u in updates]
    assert counts == sorted(counts)
    (streamed,) = updates[-1].result.completions
    # The deltas add up to the path's top-k log-probs, position by position.
    assert [top for u in updates for top in u.new_top_logprobs] == streamed.top_logprobs
    assert len(streamed.top_logprobs) == streamed.num_tokens
    (generated,) = (await engine.generate(PROMPT, spec, "generate-vs-stream")).completions
    assert streamed.text == generated.text and streamed.num_tokens == generated.num_tokens


async def test_closing_the_stream_early_aborts_the_engine_request(engine):
    spec = SampleSpec(n=1, temperature=0.7, max_tokens=512, seed=4, logprobs=5)
    stream = engine.stream(Prompt("Write a long story about apples.\n"), spec, "stream-close")
    async with contextlib.aclosing(stream):
        async for update in stream:
            if update.num_tokens >= 3:
                break
    assert await _idle(engine), "the engine still runs the closed path's request"


async def test_confidence_abort_on_the_real_engine_accounts_for_every_path(engine):
    """With keep 0.01 the threshold is about the best warm-up path's lowest window, so later paths are
    likely cut; whatever the timing, every started path either votes or is reported aborted, and the
    engine is idle after the request."""
    pipeline = GuardPipeline(engine)
    result = await pipeline.run(GuardParams(
        question="Tom has 7 apples and buys 5 more. How many apples does he have?", num_paths=6, max_tokens=96,
        seed=5, scorer="majority", confidence_abort=True, confidence_warmup=2, confidence_keep=0.01,
        adaptive=True, min_paths=6, parallel_paths=2, request_id="confidence-abort-real",
    ))
    s = result.sampling
    assert s.confidence_threshold is not None
    assert s.started == s.finished + s.aborted_low_confidence + s.aborted
    assert len(result.paths) == s.finished
    assert await _idle(engine)
