"""In-process engine on vLLM's v1 AsyncLLM: sampling, teacher-forced scoring, abort and health."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from guard.engine.base import (
    Completion,
    GenerationResult,
    ModelInfo,
    Prompt,
    SampleSpec,
    ScoreItem,
    ScoreResult,
    repeat_completions,
)
from guard.engine.aio import gather_all
from guard.engine.chat import render_chat
from guard.errors import EngineError, EngineNotReadyError, InvalidArgumentError

if TYPE_CHECKING:
    from vllm.outputs import RequestOutput
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


ENGINE_NAME = "vllm-inprocess"
# KV cache size (GiB) for vLLM's CPU backend when the operator did not choose one; vLLM's own
# fallback sizes it from a fraction of host memory, which is far too much next to other services.
_DEFAULT_CPU_KVCACHE_GIB = "4"


class _EngineStats:
    """Counters fed by the stat logger vLLM calls from its output-handler task (event-loop thread)."""

    def __init__(self) -> None:
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prefix_requests = 0
        # Scheduler view of the last engine step (the engine core's own request counts).
        self.scheduler_running = 0
        self.scheduler_waiting = 0


def _stat_logger_factory(stats: _EngineStats) -> Any:
    """A per-engine StatLoggerFactory that accumulates prefix-cache counters into `stats`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _GuardStatLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is None:
                return
            pcs = getattr(scheduler_stats, "prefix_cache_stats", None)
            if pcs is not None:
                # Stats arrive as per-step deltas; keep lifetime totals.
                stats.prefix_queries += pcs.queries
                stats.prefix_hits += pcs.hits
                stats.prefix_requests += pcs.requests
            stats.scheduler_running = scheduler_stats.num_running_reqs
            stats.scheduler_waiting = scheduler_stats.num_waiting_reqs

        def log_engine_initialized(self) -> None:
            pass

    def factory(vllm_config: Any, engine_index: int = 0) -> Any:
        return _GuardStatLogger(vllm_config, engine_index)

    return factory


def _structured_json(sampling_kwargs: dict[str, Any], schema: dict) -> None:
    """Put a JSON-schema constraint into SamplingParams kwargs, whatever this vLLM calls it."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        # vLLM < 0.11 named it guided decoding.
        from vllm.sampling_params import GuidedDecodingParams

        sampling_kwargs["guided_decoding"] = GuidedDecodingParams(json=schema)
        return
    sampling_kwargs["structured_outputs"] = StructuredOutputsParams(json=schema)


def _lp_value(lp: Any) -> float:
    return float(lp.logprob if hasattr(lp, "logprob") else lp)


def _prompt_logprob(prompt_logprobs: Any, pos: int, token: int) -> float | None:
    """Log-prob of `token` at prompt position `pos`; None where vLLM computed none (cached positions)."""
    entry = prompt_logprobs[pos] if prompt_logprobs is not None and pos < len(prompt_logprobs) else None
    lp = entry.get(token) if entry is not None else None
    return None if lp is None else _lp_value(lp)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class VllmEngine:
    """The guard's `Engine` on an in-process vLLM AsyncLLM (engine core runs in a child process)."""

    def __init__(
        self,
        model: str,
        *,
        max_model_len: int = 2048,
        enforce_eager: bool = True,
        dtype: str = "auto",
        gpu_memory_utilization: float | None = None,
        max_num_seqs: int | None = None,
        seed: int = 0,
        block_size: int | None = 32,
        extra_engine_args: dict | None = None,
    ) -> None:
        self._model = model
        self._name = os.path.basename(os.path.normpath(model)) or model
        self._max_model_len = max_model_len
        self._enforce_eager = enforce_eager
        self._dtype = dtype
        self._gpu_memory_utilization = gpu_memory_utilization
        self._max_num_seqs = max_num_seqs
        self._seed = seed
        # Small KV blocks: prefix-cache hits are whole blocks, so the probes and scorings of a path
        # recompute at most block_size - 1 tokens of its shared prefix (vLLM's CPU default is 128).
        self._block_size = block_size
        self._extra_engine_args = dict(extra_engine_args or {})

        self._llm: AsyncLLM | None = None
        self._tokenizer: Any = None
        self._chat_template: str | None = None
        self._accepts_images = False
        self._resolved_max_model_len = max_model_len
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._stats = _EngineStats()
        # Engine request ids come from one counter so they never collide, even when callers
        # reuse a request id after an earlier request under that id finished.
        self._ids = itertools.count()
        # request id -> engine request ids in flight; abort() works from this.
        self._inflight: dict[str, set[str]] = {}
        # Engine request ids abort() was asked to stop; checked right before submission so an
        # abort that lands while the prompt is still being tokenized is not lost.
        self._aborted: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        async with self._start_lock:
            if self._llm is not None:
                return
            if self._closed:
                raise EngineError("engine was shut down", retryable=False)
            # vLLM reads these from the environment when it builds its config. The KV-cache
            # default only has an effect on the CPU backend.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", _DEFAULT_CPU_KVCACHE_GIB)
            # The engine core is a child process; forking from a worker thread of a
            # multi-threaded server (gRPC, the executor thread below) can deadlock the child.
            os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")

            loop = asyncio.get_running_loop()
            # Building the engine loads weights and waits for the engine-core handshake
            # (tens of seconds), so it runs off the event loop. AsyncLLM notices it is not on a
            # running loop and defers its output handler; it is started below, on the loop.
            # The engine comes back through `built`, not as the future's result: executor
            # futures and worker frames keep their result alive, which would keep a shut-down
            # AsyncLLM around until interpreter exit (its __del__ then fails noisily).
            built: list[AsyncLLM] = []
            fut = loop.run_in_executor(None, lambda: built.append(self._build()))
            try:
                await asyncio.shield(fut)
                llm = built.pop()
            except asyncio.CancelledError:
                # The build cannot be interrupted; tear the engine down once it finishes so its
                # child processes do not outlive a cancelled start (off the loop: it blocks).
                fut.add_done_callback(lambda _: loop.run_in_executor(None, _shutdown_all, built))
                raise
            except EngineError:
                raise
            except Exception as exc:
                logger.exception("vLLM engine failed to start")
                raise EngineError(f"vLLM engine failed to start: {exc}", retryable=False) from exc

            try:
                run_handler = getattr(llm, "_run_output_handler", None)
                if run_handler is not None:
                    # Start the output handler now rather than on the first request, so that an
                    # engine-core failure before any request still marks the engine dead.
                    run_handler()
                tasks = await llm.get_supported_tasks()
                if "generate" not in tasks:
                    raise EngineError(
                        f"model {self._model} does not support generation (tasks: {tasks})"
                    )
                tokenizer = llm.get_tokenizer()
                chat_template = await asyncio.to_thread(self._resolve_chat_template, llm, tokenizer)
            except BaseException as exc:
                await asyncio.to_thread(llm.shutdown)
                if isinstance(exc, (EngineError, asyncio.CancelledError)):
                    raise
                raise EngineError(f"vLLM engine failed to start: {exc}") from exc

            model_config = llm.model_config
            self._tokenizer = tokenizer
            self._chat_template = chat_template
            self._accepts_images = bool(model_config.is_multimodal_model)
            self._resolved_max_model_len = int(model_config.max_model_len)
            self._llm = llm
            logger.info(
                "vLLM engine ready: model=%s max_model_len=%d multimodal=%s",
                self._name,
                self._resolved_max_model_len,
                self._accepts_images,
            )

    def _build(self) -> AsyncLLM:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs: dict[str, Any] = dict(
            model=self._model,
            served_model_name=self._name,
            max_model_len=self._max_model_len,
            enforce_eager=self._enforce_eager,
            dtype=self._dtype,
            seed=self._seed,
            enable_prefix_caching=True,
            # No periodic stats logging; our own stat logger below still turns stats on
            # (needed for prefix-cache counters and RequestOutput.num_cached_tokens).
            disable_log_stats=True,
        )
        if self._gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = self._gpu_memory_utilization
        if self._max_num_seqs is not None:
            kwargs["max_num_seqs"] = self._max_num_seqs
        if self._block_size is not None:
            kwargs["block_size"] = self._block_size
        if _on_cpu():
            # vLLM 0.32 on CPU kills the engine core when a seeded request's prefill is chunked
            # ("CPU Generator does not use offset" in _bookkeeping_sync): any client seed under
            # load would take the sidecar down. Whole-prompt prefill never discards a sampled token.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(self._extra_engine_args)
        args = AsyncEngineArgs(**kwargs)
        return AsyncLLM.from_engine_args(args, stat_loggers=[_stat_logger_factory(self._stats)])

    @staticmethod
    def _resolve_chat_template(llm: AsyncLLM, tokenizer: Any) -> str | None:
        # Vision-language models often keep their template on the processor, not the
        # tokenizer; vLLM's resolver looks in both. Older vLLMs lack it: use the tokenizer's.
        try:
            from vllm.renderers.hf import resolve_chat_template

            return resolve_chat_template(tokenizer, None, None, model_config=llm.model_config)
        except Exception:
            logger.debug("vLLM chat-template resolver unavailable", exc_info=True)
            return None

    @property
    def ready(self) -> bool:
        return self._llm is not None and not self._closed and not self._llm.errored

    def _engine(self) -> AsyncLLM:
        if self._closed:
            raise EngineError("engine was shut down", retryable=True)
        if self._llm is None:
            raise EngineNotReadyError()
        return self._llm

    async def check_health(self) -> None:
        llm = self._engine()
        if llm.errored:
            raise EngineError("vLLM engine is dead", retryable=True)
        try:
            await llm.check_health()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise EngineError(f"vLLM engine is unhealthy: {exc}", retryable=True) from exc

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        self._closed = True
        if llm is None:
            return
        pending = [eid for ids in self._inflight.values() for eid in ids]
        if pending:
            # Finish waiting callers with an "abort" output instead of leaving them hanging on
            # an output handler that is about to stop.
            with contextlib.suppress(Exception):
                await llm.abort(pending)
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            # Stop reading engine output before the engine core exits; otherwise its exit can
            # race the handler and get logged as an engine failure.
            handler.cancel()
            await asyncio.wait([handler], timeout=5)
        # AsyncLLM.shutdown joins the engine-core process; keep that off the loop.
        await asyncio.to_thread(llm.shutdown)
        self._inflight.clear()
        self._aborted.clear()
        logger.info("vLLM engine shut down")

    async def restart(self) -> None:
        """Shut a dead engine down (its core process is gone or wedged) and build a new one."""
        with contextlib.suppress(Exception):
            await self.shutdown()
        self._closed = False
        await self.start()

    # ------------------------------------------------------------------ introspection

    def info(self) -> ModelInfo:
        # Answers before the engine is up too (GetInfo reports ready=false then): until the model
        # config is loaded, max_model_len is the configured one and images count as unsupported.
        return ModelInfo(
            name=self._name,
            engine=ENGINE_NAME,
            max_model_len=self._resolved_max_model_len,
            accepts_images=self._accepts_images,
        )

    def num_running_requests(self) -> int:
        """Requests vLLM's front end holds unfinished (n>1 parents count once): 0 once every
        request has finished or been aborted. Before the engine is up: what this object submitted."""
        llm = self._llm
        processor = getattr(llm, "output_processor", None) if llm is not None else None
        if processor is not None and hasattr(processor, "get_num_unfinished_requests"):
            return int(processor.get_num_unfinished_requests())
        return sum(len(ids) for ids in self._inflight.values())

    def prefix_cache_stats(self) -> dict[str, int] | None:
        """Lifetime prefix-cache token counters from vLLM's scheduler stats (queries, hits)."""
        if self._llm is None:
            return None
        return {
            "queries": self._stats.prefix_queries,
            "hits": self._stats.prefix_hits,
            "requests": self._stats.prefix_requests,
        }

    # ------------------------------------------------------------------ chat

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        self._engine()
        return render_chat(
            self._tokenizer, self._chat_template, messages, accepts_images=self._accepts_images,
            model_name=self._name, add_generation_prompt=add_generation_prompt,
        )

    # ------------------------------------------------------------------ generation

    async def generate(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> GenerationResult:
        llm = self._engine()
        spec, copies = spec.decode_once()
        params = self._sampling_params(spec)
        engine_prompt = self._text_prompt(prompt)
        out = await self._run(llm, engine_prompt, params, request_id, "g")
        if out is None:
            return GenerationResult(
                completions=[Completion("", 0, "abort") for _ in range(spec.n * copies)], prompt_tokens=0
            )
        result = self._to_generation_result(out, spec)
        result.completions = repeat_completions(result.completions, copies)
        return result

    async def generate_many(
        self, prompts: Sequence[Prompt], spec: SampleSpec, request_id: str
    ) -> list[GenerationResult]:
        return await gather_all([self.generate(p, spec, request_id) for p in prompts])

    def _sampling_params(self, spec: SampleSpec) -> SamplingParams:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        if spec.n < 1:
            raise InvalidArgumentError("n", "must be at least 1")
        if spec.max_tokens < 1:
            raise InvalidArgumentError("max_tokens", "must be at least 1")
        kwargs: dict[str, Any] = dict(
            n=spec.n,
            temperature=spec.temperature,
            top_p=spec.top_p,
            max_tokens=spec.max_tokens,
            seed=spec.seed,
            stop=list(spec.stop) or None,
            logprobs=spec.logprobs,
            # Only the finished request is needed; skips per-step output objects.
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        if spec.json_schema is not None:
            _structured_json(kwargs, spec.json_schema)
        try:
            return SamplingParams(**kwargs)
        except Exception as exc:
            raise InvalidArgumentError("sample_spec", str(exc)) from exc

    def _check_images(self, prompt: Prompt, field: str) -> None:
        if prompt.images and not self._accepts_images:
            raise InvalidArgumentError(field, f"model {self._name} does not accept images")

    def _text_prompt(self, prompt: Prompt) -> dict[str, Any]:
        self._check_images(prompt, "images")
        engine_prompt: dict[str, Any] = {"prompt": prompt.text}
        if prompt.images:
            engine_prompt["multi_modal_data"] = {"image": list(prompt.images)}
        return engine_prompt

    def _to_generation_result(self, out: RequestOutput, spec: SampleSpec) -> GenerationResult:
        completions: list[Completion] = []
        for c in sorted(out.outputs, key=lambda c: c.index):
            token_ids = list(c.token_ids)
            token_lps: list[float] = []
            top_lps: list[list[float]] = []
            if spec.logprobs is not None and c.logprobs is not None:
                k = spec.logprobs
                for tok, pos in zip(token_ids, c.logprobs):
                    if pos is None:
                        continue
                    chosen = pos.get(tok)
                    token_lps.append(_lp_value(chosen) if chosen is not None else math.nan)
                    if k > 0:
                        # vLLM returns the top-k plus the sampled token when it is not among
                        # them; keep the k highest-ranked alternatives only.
                        ranked = sorted(
                            pos.values(),
                            key=lambda lp: lp.rank if lp.rank is not None else 1 << 30,
                        )
                        top_lps.append([_lp_value(lp) for lp in ranked[:k]])
            completions.append(
                Completion(
                    text=c.text,
                    num_tokens=len(token_ids),
                    finish_reason=c.finish_reason,
                    token_logprobs=token_lps,
                    top_logprobs=top_lps,
                )
            )
        return GenerationResult(
            completions=completions,
            prompt_tokens=len(out.prompt_token_ids or ()),
            cached_prompt_tokens=int(getattr(out, "num_cached_tokens", 0) or 0),
        )

    # ------------------------------------------------------------------ scoring

    async def score(self, items: Sequence[ScoreItem], request_id: str) -> list[ScoreResult]:
        llm = self._engine()
        if not items:
            return []
        encoded = await asyncio.to_thread(self._encode_items, list(items))
        return await gather_all(
            [
                self._score_one(llm, item, ctx_ids, cont_ids, request_id)
                for item, (ctx_ids, cont_ids) in zip(items, encoded)
            ]
        )

    def _encode_items(self, items: list[ScoreItem]) -> list[tuple[list[int], list[int]]]:
        tok = self._tokenizer
        encoded = []
        for i, item in enumerate(items):
            self._check_images(item.context, f"items[{i}].context.images")
            # Context and continuation are tokenized apart so the continuation's token span is
            # exact; the text already carries whatever special tokens the template put there.
            ctx = list(tok.encode(item.context.text, add_special_tokens=False))
            cont = list(tok.encode(item.continuation, add_special_tokens=False))
            if not ctx:
                bos = getattr(tok, "bos_token_id", None)
                if bos is None:
                    raise InvalidArgumentError(
                        f"items[{i}].context", "is empty and the model has no BOS token"
                    )
                # The first token has no conditional probability; condition on BOS instead.
                ctx = [bos]
            encoded.append((ctx, cont))
        return encoded

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
            lp = _prompt_logprob(plps, pos, prompt_ids[pos])
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
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        if item.context.images or cached >= len(prompt_ids):
            return {}
        params = SamplingParams(
            n=1, temperature=0.0, max_tokens=1, prompt_logprobs=0, skip_reading_prefix_cache=False,
            logprob_token_ids=[prompt_ids[cached]], detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY,
        )
        out = await self._run(llm, {"prompt_token_ids": prompt_ids[:cached]}, params, request_id, "s")
        if out is None or not out.outputs or out.outputs[0].finish_reason == "abort":
            raise EngineError(f"scoring for request {request_id} was aborted")
        if (out.num_cached_tokens or 0) >= start or not out.outputs[0].logprobs:
            return {}
        values: dict[int, float] = {}
        for pos in range(start, cached):
            lp = _prompt_logprob(out.prompt_logprobs, pos, prompt_ids[pos])
            if lp is None:
                return {}
            values[pos] = lp
        lp = out.outputs[0].logprobs[0].get(prompt_ids[cached])
        if lp is None:
            return {}
        values[cached] = _lp_value(lp)
        return values

    async def _score_request(self, llm: AsyncLLM, engine_prompt: dict, request_id: str, *, read_cache: bool):
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        params = SamplingParams(
            n=1,
            temperature=0.0,
            max_tokens=1,
            # 0 = only the logprob of each actual prompt token.
            prompt_logprobs=0,
            # vLLM skips reading the prefix cache whenever prompt logprobs are asked for, unless told.
            skip_reading_prefix_cache=not read_cache,
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        out = await self._run(llm, engine_prompt, params, request_id, "s")
        if out is None or (out.outputs and out.outputs[0].finish_reason == "abort"):
            raise EngineError(f"scoring for request {request_id} was aborted")
        return out

    # ------------------------------------------------------------------ submission / abort

    async def _run(
        self,
        llm: AsyncLLM,
        engine_prompt: dict[str, Any],
        params: SamplingParams,
        request_id: str,
        kind: str,
    ) -> RequestOutput | None:
        """Submit one engine request and wait for its final output; None if aborted pre-submit."""
        if (not isinstance(request_id, str)) or not request_id:
            raise InvalidArgumentError("request_id", "must be a non-empty string")
        eid = f"{request_id}:{kind}{next(self._ids)}"
        self._inflight.setdefault(request_id, set()).add(eid)
        try:
            engine_input, gen_kwargs = await self._render(llm, engine_prompt)
            if eid in self._aborted:
                return None
            final = None
            # From the first __anext__ to the request being registered with vLLM there is no
            # suspension point (input is pre-rendered), so abort() can always find it.
            # aclosing: if we leave early, GeneratorExit reaches AsyncLLM.generate, which aborts.
            stream_gen = llm.generate(engine_input, params, eid, **gen_kwargs)
            async with contextlib.aclosing(stream_gen) as stream:
                async for out in stream:
                    final = out
            if final is None:
                raise EngineError(f"vLLM returned no output for {eid}")
            return final
        except asyncio.CancelledError:
            # AsyncLLM.generate has already aborted the engine request on its way out.
            raise
        except (EngineError, InvalidArgumentError):
            raise
        except Exception as exc:
            if getattr(exc, "parameter", None) == "input_tokens":
                # vLLM's own context-length check: the prompt built from the request is too long.
                raise InvalidArgumentError(
                    "question", f"the prompt built from it does not fit the model's context: {exc}"
                ) from exc
            raise self._wrap(exc, eid) from exc
        finally:
            ids = self._inflight.get(request_id)
            if ids is not None:
                ids.discard(eid)
                if not ids:
                    del self._inflight[request_id]
            self._aborted.discard(eid)

    async def _render(
        self, llm: AsyncLLM, engine_prompt: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """Tokenize / run the multimodal processor off the loop, before submission.

        Returns what to pass to AsyncLLM.generate: the prompt and extra keyword arguments.
        """
        # The guard's prompts are fully rendered (chat template applied): no extra BOS.
        renderer = getattr(llm, "renderer", None)
        if renderer is None or not hasattr(renderer, "render_cmpl_async"):
            # vLLM without the renderer API (the GPU extra allows >= 0.11): generate() takes
            # the prompt dict and tokenizes it itself.
            return engine_prompt, {"tokenization_kwargs": {"add_special_tokens": False}}
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        parsed = parse_model_prompt(llm.model_config, engine_prompt)
        tok_params = renderer.default_cmpl_tok_params.with_kwargs(add_special_tokens=False)
        (engine_input,) = await renderer.render_cmpl_async([parsed], tok_params)
        return engine_input, {}

    async def abort(self, request_id: str) -> None:
        ids = list(self._inflight.get(request_id, ()))
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
        from vllm.exceptions import GracefulHTTPError, VLLMClientError

        try:
            from vllm.exceptions import RetryableRequestError
        except ImportError:  # older vLLM
            RetryableRequestError = ()  # type: ignore[assignment,misc]
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
        if RetryableRequestError and isinstance(exc, RetryableRequestError):
            return EngineError(f"vLLM request failed ({what}): {detail}", retryable=True)
        if isinstance(exc, VLLMClientError):
            return EngineError(f"vLLM rejected the request ({what}): {detail}", retryable=False)
        return EngineError(f"vLLM request failed ({what}): {type(cause).__name__}: {detail}")


def _shutdown_all(built: list[AsyncLLM]) -> None:
    while built:
        try:
            built.pop().shutdown()
        except Exception:
            logger.warning("shutting down an engine whose start was cancelled failed", exc_info=True)
