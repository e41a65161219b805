"""Submitting requests to the in-process vLLM engine, aborting them, and mapping vLLM's errors."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from guard.engine.inflight import InFlight, context_overflow, require_request_id
from guard.errors import EngineError, InvalidArgumentError

if TYPE_CHECKING:
    from vllm.outputs import RequestOutput
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


class VllmSubmission:
    """Submission and abort for `VllmEngine` (a mixin: it reads the engine's `_llm`)."""

    _llm: AsyncLLM | None

    def __init__(self) -> None:
        # Engine request ids come from one counter so they never collide, even when callers
        # reuse a request id after an earlier request under that id finished.
        self._ids = itertools.count()
        # request id -> engine request ids in flight; abort() works from this.
        self._inflight: InFlight[str] = InFlight()
        # Engine request ids abort() was asked to stop; checked right before submission so an
        # abort that lands while the prompt is still being tokenized is not lost.
        self._aborted: set[str] = set()

    async def _run(
        self,
        llm: AsyncLLM,
        engine_prompt: dict[str, Any],
        params: SamplingParams,
        request_id: str,
        kind: str,
    ) -> RequestOutput | None:
        """Submit one engine request and wait for its final output; None if aborted pre-submit."""
        final = None
        async with contextlib.aclosing(self._outputs(llm, engine_prompt, params, request_id, kind)) as outputs:
            async for out in outputs:
                final = out
        return final

    async def _outputs(
        self,
        llm: AsyncLLM,
        engine_prompt: dict[str, Any],
        params: SamplingParams,
        request_id: str,
        kind: str,
    ) -> AsyncIterator[RequestOutput]:
        """Submit one engine request and yield its outputs as vLLM hands them out (only the final one
        unless `params` asks for more); nothing if aborted pre-submit. Leaving early aborts the request."""
        require_request_id(request_id)
        eid = f"{request_id}:{kind}{next(self._ids)}"
        try:
            with self._inflight.track(request_id, eid):
                engine_input = await self._render(llm, engine_prompt)
                if eid in self._aborted:
                    return
                seen = False
                # From the first __anext__ to the request being registered with vLLM there is no
                # suspension point (input is pre-rendered), so abort() can always find it.
                # aclosing: if we leave early, GeneratorExit reaches AsyncLLM.generate, which aborts.
                async with contextlib.aclosing(llm.generate(engine_input, params, eid)) as stream:
                    async for out in stream:
                        seen = True
                        yield out
                if not seen:
                    raise EngineError(f"vLLM returned no output for {eid}")
        except asyncio.CancelledError:
            # AsyncLLM.generate has already aborted the engine request on its way out.
            raise
        except (EngineError, InvalidArgumentError):
            raise
        except Exception as exc:
            if getattr(exc, "parameter", None) == "input_tokens":
                # vLLM's own context-length check: the prompt built from the request is too long.
                raise context_overflow(exc) from exc
            raise self._wrap(exc, eid) from exc
        finally:
            self._aborted.discard(eid)

    @staticmethod
    async def _render(llm: AsyncLLM, engine_prompt: dict[str, Any]) -> Any:
        """Tokenize / run the multimodal processor off the loop, before submission."""
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        parsed = parse_model_prompt(llm.model_config, engine_prompt)
        # The guard's prompts are fully rendered (chat template applied): no extra BOS.
        tok_params = llm.renderer.default_cmpl_tok_params.with_kwargs(add_special_tokens=False)
        (engine_input,) = await llm.renderer.render_cmpl_async([parsed], tok_params)
        return engine_input

    async def abort(self, request_id: str) -> None:
        ids = self._inflight.of(request_id)
        if not ids or self._llm is None:
            return
        self._aborted.update(ids)
        try:
            # External ids: vLLM maps each to its internal request(s), n>1 children included.
            await self._llm.abort(ids)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._wrap(exc, request_id) from exc
        logger.debug("aborted %d engine request(s) of %s", len(ids), request_id)

    def _wrap(self, exc: BaseException, what: str) -> EngineError:
        from vllm.exceptions import GracefulHTTPError, RetryableRequestError, VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        llm = self._llm
        dead = isinstance(exc, EngineDeadError) or (llm is not None and llm.errored)
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        detail = str(cause) or type(cause).__name__
        if dead:
            return EngineError(f"vLLM engine is dead ({what}): {detail}", retryable=True)
        if isinstance(exc, GracefulHTTPError):
            # Queue limits (max_num_queued_reqs / tokens): back off and retry.
            return EngineError(f"vLLM engine is overloaded ({what}): {detail}", retryable=True)
        if isinstance(exc, RetryableRequestError):
            return EngineError(f"vLLM request failed ({what}): {detail}", retryable=True)
        if isinstance(exc, VLLMClientError):
            return EngineError(f"vLLM rejected the request ({what}): {detail}", retryable=False)
        return EngineError(f"vLLM request failed ({what}): {type(cause).__name__}: {detail}")
