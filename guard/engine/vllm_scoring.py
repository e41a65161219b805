"""Teacher-forced scoring on the in-process vLLM engine, reading the prefix cache the probes filled."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from guard.engine.aio import gather_all
from guard.engine.base import ScoreItem, ScoreResult
from guard.engine.tokens import encode_score_items
from guard.engine.vllm_convert import prompt_logprob, scoring_params
from guard.errors import EngineError

if TYPE_CHECKING:
    from vllm.outputs import RequestOutput
    from vllm.v1.engine.async_llm import AsyncLLM


class VllmScoring:
    """`VllmEngine.score` and its helpers (a mixin: it submits through the engine's `_run`)."""

    _tokenizer: Any
    _accepts_images: bool
    _name: str

    async def score(self, items: Sequence[ScoreItem], request_id: str) -> list[ScoreResult]:
        llm = self._engine()
        if not items:
            return []
        encoded = await asyncio.to_thread(
            encode_score_items, self._tokenizer, list(items), accepts_images=self._accepts_images,
            model_name=self._name,
        )
        return await gather_all(
            [
                self._score_one(llm, item, ctx_ids, cont_ids, request_id)
                for item, (ctx_ids, cont_ids) in zip(items, encoded)
            ]
        )

    async def _score_one(
        self,
        llm: AsyncLLM,
        item: ScoreItem,
        ctx_ids: list[int],
        cont_ids: list[int],
        request_id: str,
    ) -> ScoreResult:
        engine_prompt: dict[str, Any] = {"prompt_token_ids": ctx_ids + cont_ids}
        if item.context.images:
            # The placeholder tokens in the context get expanded by vLLM's multimodal
            # processor; the continuation stays at the tail, which is all we index.
            engine_prompt["multi_modal_data"] = {"image": list(item.context.images)}
        k = len(cont_ids)
        # Read the prefix cache: the probe contexts were just prefilled by the probes, and
        # recomputing them is most of the scoring cost. Cached positions get no prompt logprobs,
        # but only the continuation's positions are needed; see _cached_continuation for when the
        # cache covered some of them.
        out = await self._score_request(llm, engine_prompt, request_id, read_cache=True)
        prompt_ids = list(out.prompt_token_ids or ())
        if k == 0:
            return ScoreResult(logprob_sum=0.0, num_tokens=0, prompt_tokens=len(prompt_ids))
        plps = out.prompt_logprobs
        if plps is None or len(plps) != len(prompt_ids) or prompt_ids[-k:] != cont_ids:
            raise EngineError("vLLM returned prompt logprobs that do not line up with the prompt")
        # First continuation position, counted in the prompt vLLM ran: with images, each
        # placeholder in ctx_ids was expanded to the image's tokens.
        start = len(prompt_ids) - k
        cached = out.num_cached_tokens or 0
        values: dict[int, float] = {}
        if cached >= start:
            values = await self._cached_continuation(llm, item, prompt_ids, start, cached, request_id)
            if not values:
                out = await self._score_request(llm, engine_prompt, request_id, read_cache=False)
                plps = out.prompt_logprobs
        total = 0.0
        for pos in range(start, len(prompt_ids)):
            if pos in values:
                total += values[pos]
                continue
            lp = prompt_logprob(plps, pos, prompt_ids[pos])
            if lp is None:
                raise EngineError(f"vLLM returned no logprob for prompt position {pos}")
            total += lp
        return ScoreResult(
            logprob_sum=total, num_tokens=k, prompt_tokens=len(prompt_ids),
            cached_prompt_tokens=out.num_cached_tokens or 0,
        )

    async def _cached_continuation(
        self, llm: AsyncLLM, item: ScoreItem, prompt_ids: list[int], start: int, cached: int, request_id: str
    ) -> dict[int, float]:
        """Log-probs of continuation positions start..cached that the prefix cache hid.

        A cached block can cover the first continuation tokens (the probe's own answer, or a sibling
        candidate with the same first token, filled it). Rather than re-prefilling the whole prompt
        without the cache, run the prompt cut at the cache boundary: vLLM recomputes only its last
        block, whose prompt log-probs cover start..cached-1, and `logprob_token_ids` gives the
        log-prob of the token at `cached`. Returns {} when that cannot work (images: the expanded
        prompt cannot be sent as token ids; or the cut prompt's cache still covers `start`); the
        caller then scores the whole prompt without the cache.
        """
        if item.context.images or cached >= len(prompt_ids):
            return {}
        params = scoring_params(read_cache=True, next_token_id=prompt_ids[cached])
        out = await self._run(llm, {"prompt_token_ids": prompt_ids[:cached]}, params, request_id, "s")
        if out is None or not out.outputs or out.outputs[0].finish_reason == "abort":
            raise EngineError(f"scoring for request {request_id} was aborted")
        if (out.num_cached_tokens or 0) >= start or not out.outputs[0].logprobs:
            return {}
        values: dict[int, float] = {}
        for pos in range(start, cached):
            lp = prompt_logprob(out.prompt_logprobs, pos, prompt_ids[pos])
            if lp is None:
                return {}
            values[pos] = lp
        nxt = out.outputs[0].logprobs[0].get(prompt_ids[cached])
        if nxt is None:
            return {}
        values[cached] = float(nxt.logprob)
        return values

    async def _score_request(
        self, llm: AsyncLLM, engine_prompt: dict, request_id: str, *, read_cache: bool
    ) -> RequestOutput:
        out = await self._run(llm, engine_prompt, scoring_params(read_cache=read_cache), request_id, "s")
        if out is None or (out.outputs and out.outputs[0].finish_reason == "abort"):
            raise EngineError(f"scoring for request {request_id} was aborted")
        return out
