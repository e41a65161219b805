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
