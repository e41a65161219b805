"""In-process engine on vLLM's v1 AsyncLLM: lifecycle, health and generation.

Scoring lives in `vllm_scoring`, submission and abort in `vllm_submit`, conversions in `vllm_convert`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from guard.engine.aio import gather_all
from guard.engine.base import GenerationResult, ModelInfo, PathUpdate, Prompt, SampleSpec, repeat_completions
from guard.engine.chat import render_chat
from guard.engine.cpu_threads import BIND_ENV, omp_threads_bind
from guard.engine.tokens import require_image_support
from guard.engine.versions import warn_if_unsupported_vllm
from guard.engine.vllm_convert import sampling_params, to_generation_result, top_logprobs
from guard.engine.vllm_dtype import cpu_has_fast_bf16, on_cpu, resolve_dtype
from guard.engine.vllm_scoring import VllmScoring
from guard.engine.vllm_stats import EngineStats, stat_logger_factory
from guard.engine.vllm_submit import VllmSubmission
from guard.errors import EngineError, EngineNotReadyError, InvalidArgumentError

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


ENGINE_NAME = "vllm-inprocess"
# KV cache size (GiB) for vLLM's CPU backend when the operator did not choose one; vLLM's own
# fallback sizes it from a fraction of host memory, which is far too much next to other services.
_DEFAULT_CPU_KVCACHE_GIB = "4"


class VllmEngine(VllmScoring, VllmSubmission):
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
        VllmSubmission.__init__(self)
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
        self._stats = EngineStats()

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
            warn_if_unsupported_vllm()
            if on_cpu():
                bind = omp_threads_bind(sorted(os.sched_getaffinity(0)), os.environ)
                if bind is not None:
                    # Read by the engine's child processes when they start (guard.engine.cpu_threads).
                    os.environ[BIND_ENV] = bind
                    logger.info("vLLM CPU compute threads bound to CPUs %s", bind)
            llm = await self._build_off_loop()
            await self._adopt(llm)
            logger.info(
                "vLLM engine ready: model=%s max_model_len=%d multimodal=%s",
                self._name,
                self._resolved_max_model_len,
                self._accepts_images,
            )

    async def _build_off_loop(self) -> AsyncLLM:
        loop = asyncio.get_running_loop()
        # Building the engine loads weights and waits for the engine-core handshake
        # (tens of seconds), so it runs off the event loop. AsyncLLM notices it is not on a
        # running loop and defers its output handler; `_adopt` starts it, on the loop.
        # The engine comes back through `built`, not as the future's result: executor
        # futures and worker frames keep their result alive, which would keep a shut-down
        # AsyncLLM around until interpreter exit (its __del__ then fails noisily).
        built: list[AsyncLLM] = []
        fut = loop.run_in_executor(None, lambda: built.append(self._build()))
        try:
            await asyncio.shield(fut)
            return built.pop()
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

    async def _adopt(self, llm: AsyncLLM) -> None:
        """Start a freshly built engine's output handler and read its model; shut it down on failure."""
        try:
            # Start the output handler now rather than on the first request, so that an
            # engine-core failure before any request still marks the engine dead.
            llm._run_output_handler()
            tasks = await llm.get_supported_tasks()
            if "generate" not in tasks:
                raise EngineError(f"model {self._model} does not support generation (tasks: {tasks})")
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

    def _run_dtype(self) -> str:
        cpu = on_cpu()
        dtype = resolve_dtype(self._dtype, cpu, cpu_has_fast_bf16() if cpu else True)
        if dtype != self._dtype:
            logger.info("dtype auto -> %s: this CPU has no native bfloat16 (AVX512-BF16/AMX)", dtype)
        return dtype

    def _build(self) -> AsyncLLM:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs: dict[str, Any] = {
            "model": self._model,
            "served_model_name": self._name,
            "max_model_len": self._max_model_len,
            "enforce_eager": self._enforce_eager,
            "dtype": self._run_dtype(),
            "seed": self._seed,
            "enable_prefix_caching": True,
            # No periodic stats logging; our own stat logger below still turns stats on
            # (needed for prefix-cache counters and RequestOutput.num_cached_tokens).
            "disable_log_stats": True,
        }
        if self._gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = self._gpu_memory_utilization
        if self._max_num_seqs is not None:
            kwargs["max_num_seqs"] = self._max_num_seqs
        if self._block_size is not None:
            kwargs["block_size"] = self._block_size
        if on_cpu():
            # vLLM 0.32 on CPU kills the engine core when a seeded request's prefill is chunked
            # ("CPU Generator does not use offset" in _bookkeeping_sync): any client seed under
            # load would take the sidecar down. Whole-prompt prefill never discards a sampled token.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(self._extra_engine_args)
        args = AsyncEngineArgs(**kwargs)
        return AsyncLLM.from_engine_args(args, stat_loggers=[stat_logger_factory(self._stats)])

    @staticmethod
    def _resolve_chat_template(llm: AsyncLLM, tokenizer: Any) -> str | None:
        # Vision-language models often keep their template on the processor, not the
        # tokenizer; vLLM's resolver looks in both. None: the tokenizer's own template.
        from vllm.renderers.hf import resolve_chat_template

        try:
            return resolve_chat_template(tokenizer, None, None, model_config=llm.model_config)
        except Exception:
            logger.debug("vLLM chat-template resolver failed", exc_info=True)
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
        pending = self._inflight.all()
        if pending:
            # Finish waiting callers with an "abort" output instead of leaving them hanging on
            # an output handler that is about to stop.
            with contextlib.suppress(Exception):
                await llm.abort(pending)
        handler = llm.output_handler
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
        if self._llm is not None:
            return int(self._llm.output_processor.get_num_unfinished_requests())
        return self._inflight.count()

    def engine_work(self) -> dict[str, int] | None:
        """Lifetime engine requests finished and tokens generated, as vLLM counts them (None before start)."""
        return None if self._llm is None else self._stats.work()

    def prefix_cache_stats(self) -> dict[str, int] | None:
        """Lifetime prefix-cache token counters from vLLM's scheduler stats (queries, hits)."""
        return None if self._llm is None else self._stats.prefix_cache()

    async def reset_prefix_cache(self) -> bool:
        """Drop every cached prefix block (benchmarks use it so each variant meets the cache as served).
        False when vLLM refused: blocks still in use by running requests cannot be dropped."""
        return bool(await self._engine().reset_prefix_cache())

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
        params = sampling_params(spec)
        out = await self._run(llm, self._text_prompt(prompt), params, request_id, "g")
        if out is None:
            return GenerationResult.aborted(spec.n * copies)
        result = to_generation_result(out, spec)
        result.completions = repeat_completions(result.completions, copies)
        return result

    async def stream(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> AsyncIterator[PathUpdate]:
        if spec.n != 1:
            raise InvalidArgumentError("n", "a streamed path is one completion")
        llm = self._engine()
        outputs = self._outputs(llm, self._text_prompt(prompt), sampling_params(spec, streamed=True), request_id, "s")
        last, seen = None, 0
        async with contextlib.aclosing(outputs) as stream:
            async for out in stream:
                last = out
                if out.finished:
                    break
                c = out.outputs[0]
                new = top_logprobs(c, spec, seen)
                seen = len(c.logprobs or ())
                yield PathUpdate(len(c.token_ids), new, None, len(out.prompt_token_ids or ()),
                                 int(out.num_cached_tokens or 0))
        if last is None:
            yield PathUpdate(0, [], GenerationResult.aborted(1))
            return
        tail = top_logprobs(last.outputs[0], spec, seen)
        result = to_generation_result(last, spec)
        yield PathUpdate(result.completions[0].num_tokens, tail, result, result.prompt_tokens,
                         result.cached_prompt_tokens)

    async def generate_many(
        self, prompts: Sequence[Prompt], spec: SampleSpec, request_id: str
    ) -> list[GenerationResult]:
        return await gather_all([self.generate(p, spec, request_id) for p in prompts])

    def _text_prompt(self, prompt: Prompt) -> dict[str, Any]:
        require_image_support(
            bool(prompt.images), accepts_images=self._accepts_images, model_name=self._name, field="images"
        )
        engine_prompt: dict[str, Any] = {"prompt": prompt.text}
        if prompt.images:
            engine_prompt["multi_modal_data"] = {"image": list(prompt.images)}
        return engine_prompt


def _shutdown_all(built: list[AsyncLLM]) -> None:
    while built:
        try:
            built.pop().shutdown()
        except Exception:
            logger.warning("shutting down an engine whose start was cancelled failed", exc_info=True)
