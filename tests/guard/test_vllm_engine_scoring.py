"""Teacher-forced scoring on the vLLM engine when image placeholders expand inside vLLM (no vLLM needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from guard.engine import Prompt, ScoreItem
from guard.engine.vllm_engine import VllmEngine

IMAGE_TOKEN = 99
IMAGE_TOKENS = 64  # what vLLM's multimodal processor expands one placeholder to


def fake_engine(cached_tokens: int) -> tuple[VllmEngine, list[bool]]:
    """An engine whose scoring requests are answered like vLLM answers them: the placeholder expanded,
    `cached_tokens` read from the prefix cache when allowed, logprob -pos/100 at every position."""
    engine = VllmEngine("unused")
    reads: list[bool] = []

    async def score_request(llm, engine_prompt, request_id, *, read_cache):
        reads.append(read_cache)
        ids = []
        for tok in engine_prompt["prompt_token_ids"]:
            ids.extend([tok] * IMAGE_TOKENS if tok == IMAGE_TOKEN else [tok])
        logprobs = [None] + [{tok: SimpleNamespace(logprob=-pos / 100)} for pos, tok in enumerate(ids) if pos]
        return SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=logprobs,
                               num_cached_tokens=cached_tokens if read_cache else 0)

    engine._score_request = score_request
    return engine, reads


@pytest.mark.parametrize(
    "cached_tokens, reads",
    [
        (0, [True]),
        # The cache covers the image and the context (what the probes prefilled): one request. Counting
        # positions in the unexpanded context (4 tokens) would wrongly send it again without the cache.
        (64, [True]),
        (66, [True]),
        # The cache also covers the first continuation position, which then has no logprob: score again.
        (67, [True, False]),
    ],
)
async def test_continuation_positions_count_the_expanded_image_tokens(cached_tokens, reads):
    engine, seen = fake_engine(cached_tokens)
    ctx_ids, cont_ids = [1, IMAGE_TOKEN, 5, 6], [7, 8]
    item = ScoreItem(Prompt("<image>ctx", (object(),)), "ab")
    result = await engine._score_one(None, item, ctx_ids, cont_ids, "r1")
    assert seen == reads
    expanded = len(ctx_ids) - 1 + IMAGE_TOKENS + len(cont_ids)
    assert result.prompt_tokens == expanded == 69
    assert result.num_tokens == 2
    # Only the continuation's own positions (the last two of the expanded prompt) are summed.
    assert result.logprob_sum == pytest.approx(-(67 + 68) / 100)
    assert result.cached_prompt_tokens == (cached_tokens if reads == [True] else 0)


def fake_text_engine(cached: int, cut_cached: int):
    """Like vLLM: positions the prefix cache covered (and position 0) have no prompt logprob; the cut
    prompt's `logprob_token_ids` give the log-prob of the token right after it."""
    engine = VllmEngine("unused")
    calls: list[str] = []

    def logprobs(ids, covered):
        return [None if pos <= covered or pos == 0 else {tok: SimpleNamespace(logprob=-pos / 100)}
                for pos, tok in enumerate(ids)]

    async def score_request(llm, engine_prompt, request_id, *, read_cache):
        calls.append("full-cached" if read_cache else "full-uncached")
        ids = engine_prompt["prompt_token_ids"]
        c = cached if read_cache else 0
        return SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=logprobs(ids, c - 1 if c else 0),
                               num_cached_tokens=c)

    async def run(llm, engine_prompt, params, request_id, kind):
        calls.append("cut")
        ids = engine_prompt["prompt_token_ids"]
        (target,) = params.logprob_token_ids
        nxt = {target: SimpleNamespace(logprob=-len(ids) / 100)}
        return SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=logprobs(ids, cut_cached - 1 if cut_cached else 0),
                               num_cached_tokens=cut_cached,
                               outputs=[SimpleNamespace(logprobs=[nxt], finish_reason="length")])

    engine._score_request = score_request
    engine._run = run
    return engine, calls


@pytest.mark.parametrize(
    "cached, cut_cached, calls",
    [
        (32, 0, ["full-cached"]),                   # cache ends before the continuation: one request
        (41, 32, ["full-cached", "cut"]),           # covers 2 continuation tokens: recompute one block
        (41, 40, ["full-cached", "cut", "full-uncached"]),  # the cut prompt is cached too far: full re-score
    ],
)
async def test_text_scoring_recovers_cached_continuation_positions_cheaply(cached, cut_cached, calls):
    engine, seen = fake_text_engine(cached, cut_cached)
    ctx_ids, cont_ids = list(range(1, 40)), [201, 202, 203, 204]  # continuation at positions 39..42
    result = await engine._score_one(None, ScoreItem(Prompt("ctx"), "abcd"), ctx_ids, cont_ids, "r")
    assert seen == calls
    assert result.num_tokens == 4
    assert result.logprob_sum == pytest.approx(-(39 + 40 + 41 + 42) / 100)
