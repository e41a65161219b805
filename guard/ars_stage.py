"""Obtaining a request's sub-questions: from the request, the cache, or the model (alongside sampling)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from guard.ars import ArsCache, ArsOutcome, ars_cache_key, ars_seed, generate_ars
from guard.engine import Engine
from guard.errors import EngineError
from guard.params import GuardParams
from guard.prompts import PromptBuilder
from guard.result import ArsSource, PhaseUsage
from guard.stages import Stage, StageClock, StageOutcome

logger = logging.getLogger(__name__)


@dataclass
class ArsStage:
    engine: Engine
    prompts: PromptBuilder
    cache: ArsCache
    max_sub_questions: int
    max_tokens: int
    retry_samples: int

    def cached(self, params: GuardParams) -> list[str] | None:
        return self.cache.get(ars_cache_key(params.question, params.images))

    async def obtain(self, params: GuardParams, images: list[object], usage: PhaseUsage) -> ArsOutcome:
        if params.sub_questions:
            return ArsOutcome(list(params.sub_questions), ArsSource.REQUEST)
        key = ars_cache_key(params.question, params.images)
        cached = self.cache.get(key)
        if cached is not None:
            return ArsOutcome(cached, ArsSource.CACHE)
        outcome = await generate_ars(
            self.engine, self.prompts, params.question, images, self.max_sub_questions, self.max_tokens,
            params.request_id, usage, retry_samples=self.retry_samples,
            seed=ars_seed(params.question, params.images),
        )
        if outcome.sub_questions:
            self.cache.put(key, outcome.sub_questions)
        return outcome

    async def timed(self, params: GuardParams, images: list[object], clock: StageClock) -> StageOutcome[ArsOutcome]:
        start = time.perf_counter()
        usage = PhaseUsage()
        try:
            outcome = await self.obtain(params, images, usage)
        except EngineError as exc:
            # The ARS only refines the confidence: without it the guard still answers (answer-only
            # consistency, ars_error says why). A dead engine fails the sampling anyway.
            logger.warning("request %s: ARS generation failed: %s", params.request_id, exc)
            outcome = ArsOutcome([], ArsSource.NONE, f"ARS generation failed: {exc}")
        finally:
            # Runs concurrently with sampling, so it is a timing of its own, not part of "sample".
            clock.add(Stage.ARS, (time.perf_counter() - start) * 1e3)
        return StageOutcome(outcome, {Stage.ARS: usage})
