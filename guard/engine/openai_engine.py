"""The guard's `Engine` on one or more running vLLM OpenAI-compatible servers, over pooled async HTTP.

Sampling, ARS generation and probes use `/v1/completions` on the already rendered prompt (the
same text the in-process engine gets, so both engines make the same decisions); all prompts of a
stage go in one HTTP call, which vLLM schedules as one batch. Scoring uses vLLM's
`prompt_logprobs` on pre-tokenized prompts. Prompts with images go to `/v1/chat/completions`
instead (the completions endpoint takes no images): the images as base64 data URLs, the rendered
text (which already holds the model's image placeholders) as the only text, and a pass-through
chat template, so the server sees exactly the prompt the in-process engine would; that needs the
vLLM server started with `--trust-request-chat-template`. The tokenizer and chat template are loaded locally
(from `tokenizer`, or the model path the server reports when it exists here) because prompts are
rendered before they are sent.

Every request id is routed to one replica by consistent hashing, so its paths, probes and scores
share that replica's prefix cache; a replica that fails is marked unhealthy and the call moves to
the next one on the ring. A background loop polls each replica's `/health`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from guard.engine import GenerationResult, ModelInfo, PathUpdate, Prompt, SampleSpec, ScoreItem, ScoreResult
from guard.engine.aio import gather_all
from guard.engine.base import repeat_completions, whole_path
from guard.engine.chat import render_chat
from guard.engine.openai_http import ReplicaFailed, UpstreamClient, api_base
from guard.engine.openai_payloads import (
    ImageDataUrls,
    chat_completion_body,
    chat_fields,
    completion_body,
    parse_chat_completion,
    parse_completion,
    parse_score,
    scoring_body,
    sorted_choices,
    usage,
)
from guard.engine.tokens import encode_score_items, require_image_support
from guard.engine.upstream import ReplicaState
from guard.errors import EngineError, EngineNotReadyError

logger = logging.getLogger(__name__)

ENGINE_NAME = "vllm-openai"


class OpenAIEngine:
    def __init__(
        self,
        upstreams: Sequence[str],
        *,
        tokenizer: str | None = None,
        api_key: str | None = None,
        connect_timeout_seconds: float = 5.0,
        request_timeout_seconds: float = 600.0,
        health_interval_seconds: float = 2.0,
        startup_timeout_seconds: float = 900.0,
        max_connections: int = 256,
    ) -> None:
        self._bases = [api_base(u) for u in upstreams]
        self._http = UpstreamClient(
            self._bases,
            api_key=api_key if api_key is not None else os.environ.get("TRACE_GUARD_UPSTREAM_API_KEY"),
            connect_timeout_seconds=connect_timeout_seconds,
            request_timeout_seconds=request_timeout_seconds,
            max_connections=max_connections,
        )
        self.ring = self._http.ring
        self._tokenizer_path = tokenizer
        self._health_interval = health_interval_seconds
        self._startup_timeout = startup_timeout_seconds

        self._health_task: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()
        self._tokenizer: Any = None
        self._chat_template: str | None = None
        self._model_id = ""
        self._max_model_len = 0
        self._accepts_images = False
        self._closed = False
        self._data_url = ImageDataUrls()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        async with self._start_lock:
            if self._http.is_open:
                return
            if self._closed:
                raise EngineError("engine was shut down")
            self._http.open()
            try:
                card = await self._wait_for_first_replica()
                await asyncio.to_thread(self._load_tokenizer, card)
            except BaseException:
                await self._http.close()
                raise
            self._health_task = asyncio.create_task(self._http.health_loop(self._health_interval))
            logger.info(
                "upstream engine ready: model=%s max_model_len=%d multimodal=%s replicas=%s",
                self._model_id, self._max_model_len, self._accepts_images, self._bases,
            )

    async def _wait_for_first_replica(self) -> dict:
        """Poll the replicas until one answers /v1/models (a vLLM server loads for minutes)."""
        deadline = time.monotonic() + self._startup_timeout
        last_log = 0.0
        while True:
            await self._http.check_all()
            for replica in self.ring.replicas:
                if replica.healthy:
                    try:
                        return await self._model_card(replica)
                    except ReplicaFailed as exc:
                        self.ring.mark(replica, False, str(exc))
            if time.monotonic() > deadline:
                errors = {r.url: r.last_error for r in self.ring.replicas}
                raise EngineError(f"no upstream became healthy in {self._startup_timeout:.0f}s: {errors}")
            if time.monotonic() - last_log > 30:
                logger.info("waiting for an upstream to become healthy: %s", self._bases)
                last_log = time.monotonic()
            await asyncio.sleep(min(self._health_interval, 1.0))

    async def _model_card(self, replica: ReplicaState) -> dict:
        body = await self._http.request(replica, "GET", "/models", None, timeout=10)
        models = body.get("data") or []
        if not models:
            raise ReplicaFailed(f"{replica.url}/models lists no model")
        return models[0]

    def _load_tokenizer(self, card: dict) -> None:
        from transformers import AutoConfig, AutoTokenizer

        path = self._tokenizer_path or card.get("root") or card["id"]
        if not self._tokenizer_path and not os.path.isdir(path):
            raise EngineError(
                f"the upstream serves {card.get('root')!r}, which is not a directory here; pass --tokenizer "
                "with a local copy of the model's tokenizer (prompts are rendered by the sidecar)"
            )
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            config = AutoConfig.from_pretrained(path)
        except Exception as exc:
            raise EngineError(f"cannot load the tokenizer from {path}: {exc}") from exc
        self._chat_template = getattr(self._tokenizer, "chat_template", None)
        if self._chat_template is None:
            try:
                from transformers import AutoProcessor

                self._chat_template = getattr(AutoProcessor.from_pretrained(path), "chat_template", None)
            except Exception:
                logger.debug("no processor chat template at %s", path, exc_info=True)
        self._model_id = card["id"]
        self._max_model_len = int(card.get("max_model_len") or getattr(config, "max_position_embeddings", 0) or 0)
        self._accepts_images = getattr(config, "vision_config", None) is not None

    @property
    def ready(self) -> bool:
        # Started and not shut down. Upstream outages show in check_health (health goes
        # NOT_SERVING, calls get UNAVAILABLE) but never trigger an in-process restart.
        return self._http.is_open and self._tokenizer is not None

    async def check_health(self) -> None:
        if not self.ready:
            raise EngineNotReadyError()
        if not self.ring.any_healthy:
            errors = "; ".join(f"{r.url}: {r.last_error}" for r in self.ring.replicas)
            raise EngineError(f"no healthy upstream ({errors})", retryable=True)

    async def shutdown(self) -> None:
        self._closed = True
        await self._close()

    async def _close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
            self._health_task = None
        await self._http.close()

    async def restart(self) -> None:
        await self._close()
        await self.start()

    def info(self) -> ModelInfo:
        return ModelInfo(
            # As in-process: a served name that is a path is reported by its last component.
            name=os.path.basename(os.path.normpath(self._model_id)) if self._model_id else "upstream",
            engine=ENGINE_NAME,
            max_model_len=self._max_model_len,
            accepts_images=self._accepts_images,
        )

    def num_running_requests(self) -> int:
        return self._http.num_in_flight()

    def replicas(self) -> list[ReplicaState]:
        """Per-upstream health and request outcomes (read by the server's metrics)."""
        return list(self.ring.replicas)

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        if self._tokenizer is None:
            raise EngineNotReadyError()
        return render_chat(
            self._tokenizer, self._chat_template, messages,
            accepts_images=self._accepts_images, model_name=self._model_id,
            add_generation_prompt=add_generation_prompt,
        )

    async def abort(self, request_id: str) -> None:
        await self._http.abort(request_id)

    # ------------------------------------------------------------------ generation

    async def generate(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> GenerationResult:
        (result,) = await self.generate_many([prompt], spec, request_id)
        return result

    def stream(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> AsyncIterator[PathUpdate]:
        # The upstream is asked for whole completions: a path is seen once it is done, so online
        # confidence checks cannot cut it short here (they still rank it once it ends).
        return whole_path(self.generate(prompt, spec, request_id))

    async def generate_many(
        self, prompts: Sequence[Prompt], spec: SampleSpec, request_id: str
    ) -> list[GenerationResult]:
        if not prompts:
            return []
        if any(p.images for p in prompts):
            return await gather_all([self._generate_chat(p, spec, request_id) for p in prompts])
        spec, copies = spec.decode_once()
        body = completion_body(self._model_id, spec)
        body["prompt"] = [p.text for p in prompts]
        out = await self._http.call(request_id, "/completions", body)
        choices = sorted_choices(out)
        if len(choices) != len(prompts) * spec.n:
            raise EngineError(f"upstream returned {len(choices)} choices for {len(prompts)} x n={spec.n}")
        prompt_tokens, cached = usage(out)
        results = []
        for i in range(len(prompts)):
            completions = repeat_completions(
                [parse_completion(c, spec) for c in choices[i * spec.n:(i + 1) * spec.n]], copies
            )
            # Usage is reported for the whole call; spread it evenly over the prompts.
            results.append(
                GenerationResult(completions, prompt_tokens // len(prompts), cached // len(prompts))
            )
        return results

    async def _generate_chat(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> GenerationResult:
        """One prompt with images, through the chat endpoint (see the module docstring)."""
        spec, copies = spec.decode_once()
        body = chat_completion_body(self._model_id, spec)
        body.update(await self._chat_fields(prompt, prompt.text))
        out = await self._http.call(request_id, "/chat/completions", body)
        choices = sorted_choices(out)
        if len(choices) != spec.n:
            raise EngineError(f"upstream returned {len(choices)} choices for n={spec.n}")
        completions = repeat_completions([parse_chat_completion(c, spec) for c in choices], copies)
        return GenerationResult(completions, *usage(out))

    async def _chat_fields(self, prompt: Prompt, text: str) -> dict[str, Any]:
        require_image_support(True, accepts_images=self._accepts_images, model_name=self._model_id, field="images")
        urls = [await asyncio.to_thread(self._data_url, image) for image in prompt.images]
        return chat_fields(urls, text)

    # ------------------------------------------------------------------ scoring

    async def score(self, items: Sequence[ScoreItem], request_id: str) -> list[ScoreResult]:
        if not items:
            return []
        encoded = await asyncio.to_thread(
            encode_score_items, self._tokenizer, list(items), accepts_images=self._accepts_images,
            model_name=self._model_id,
        )
        if any(item.context.images for item in items):
            return await gather_all(
                [self._score_chat(item, cont, request_id) for item, (_, cont) in zip(items, encoded)]
            )
        body = scoring_body(self._model_id)
        body["prompt"] = [ctx + cont for ctx, cont in encoded]
        body["add_special_tokens"] = False
        out = await self._http.call(request_id, "/completions", body)
        choices = sorted_choices(out)
        if len(choices) != len(items):
            raise EngineError(f"upstream returned {len(choices)} scorings for {len(items)} items")
        return [parse_score(c, ctx, cont) for c, (ctx, cont) in zip(choices, encoded)]

    async def _score_chat(self, item: ScoreItem, cont: list[int], request_id: str) -> ScoreResult:
        """Score one context with images: the whole text goes through the chat endpoint (the image
        placeholders expand server-side), and the continuation is the tail of the prompt tokens."""
        body = scoring_body(self._model_id)
        body.update(await self._chat_fields(item.context, item.context.text + item.continuation))
        out = await self._http.call(request_id, "/chat/completions", body)
        prompt_ids = list(out.get("prompt_token_ids") or [])
        if len(cont) and prompt_ids[-len(cont):] != cont:
            raise EngineError("the upstream tokenized the scored continuation differently from the sidecar")
        return parse_score(out, prompt_ids[: len(prompt_ids) - len(cont)], cont)
