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
import base64
import io
import json
import logging
import os
import time
import weakref
from typing import Any, Sequence

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
from guard.engine.upstream import ReplicaRing, ReplicaState
from guard.errors import EngineError, EngineNotReadyError, InvalidArgumentError

logger = logging.getLogger(__name__)

ENGINE_NAME = "vllm-openai"


class _ReplicaFailed(Exception):
    """The replica could not serve the call (down, 5xx, timeout): try the next one."""


def _api_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _server_root(api_base: str) -> str:
    return api_base[: -len("/v1")]


# Renders the one text part verbatim: the sidecar has already applied the model's own template.
PASS_THROUGH_TEMPLATE = (
    "{%- for message in messages -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}{%- endfor -%}"
)


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
        self._bases = [_api_base(u) for u in upstreams]
        self.ring = ReplicaRing(self._bases)
        self._tokenizer_path = tokenizer
        self._api_key = api_key if api_key is not None else os.environ.get("TRACE_GUARD_UPSTREAM_API_KEY")
        self._connect_timeout = connect_timeout_seconds
        self._request_timeout = request_timeout_seconds
        self._health_interval = health_interval_seconds
        self._startup_timeout = startup_timeout_seconds
        self._max_connections = max_connections

        self._session: Any = None  # aiohttp.ClientSession
        self._health_task: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()
        self._tokenizer: Any = None
        self._chat_template: str | None = None
        self._model_id = ""
        self._max_model_len = 0
        self._accepts_images = False
        self._closed = False
        # request id -> HTTP calls in flight; abort() cancels them (closing the connection makes
        # vLLM abort the request server-side).
        self._inflight: dict[str, set[asyncio.Task]] = {}
        # PIL image -> data URL, so the N x K probes of a request encode each image once.
        # (PIL images are unhashable: keyed by id, dropped when the image is collected.)
        self._data_urls: dict[int, tuple[weakref.ref, str]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        async with self._start_lock:
            if self._session is not None:
                return
            if self._closed:
                raise EngineError("engine was shut down")
            import aiohttp

            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self._request_timeout, sock_connect=self._connect_timeout),
                headers=headers,
            )
            try:
                card = await self._wait_for_first_replica()
                await asyncio.to_thread(self._load_tokenizer, card)
            except BaseException:
                await self._session.close()
                self._session = None
                raise
            self._health_task = asyncio.create_task(self._health_loop())
            logger.info(
                "upstream engine ready: model=%s max_model_len=%d multimodal=%s replicas=%s",
                self._model_id, self._max_model_len, self._accepts_images, self._bases,
            )

    async def _wait_for_first_replica(self) -> dict:
        """Poll the replicas until one answers /v1/models (a vLLM server loads for minutes)."""
        deadline = time.monotonic() + self._startup_timeout
        last_log = 0.0
        while True:
            await self._check_all()
            for replica in self.ring.replicas:
                if replica.healthy:
                    try:
                        return await self._model_card(replica)
                    except _ReplicaFailed as exc:
                        self.ring.mark(replica, False, str(exc))
            if time.monotonic() > deadline:
                errors = {r.url: r.last_error for r in self.ring.replicas}
                raise EngineError(f"no upstream became healthy in {self._startup_timeout:.0f}s: {errors}")
            if time.monotonic() - last_log > 30:
                logger.info("waiting for an upstream to become healthy: %s", self._bases)
                last_log = time.monotonic()
            await asyncio.sleep(min(self._health_interval, 1.0))

    async def _model_card(self, replica: ReplicaState) -> dict:
        body = await self._request(replica, "GET", "/models", None, timeout=10)
        models = body.get("data") or []
        if not models:
            raise _ReplicaFailed(f"{replica.url}/models lists no model")
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

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            try:
                await self._check_all()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed round is retried next interval
                logger.exception("upstream health round failed")

    async def _check_all(self) -> None:
        await asyncio.gather(*(self._check_one(r) for r in self.ring.replicas))

    async def _check_one(self, replica: ReplicaState) -> None:
        import aiohttp

        url = _server_root(replica.url) + "/health"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                ok, error = resp.status == 200, f"/health returned {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if self.ring.mark(replica, ok, error):
            if ok:
                logger.info("upstream %s is healthy", replica.url)
            else:
                logger.warning("upstream %s is unhealthy: %s", replica.url, error)

    @property
    def ready(self) -> bool:
        # Started and not shut down. Upstream outages show in check_health (health goes
        # NOT_SERVING, calls get UNAVAILABLE) but never trigger an in-process restart.
        return self._session is not None and self._tokenizer is not None

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
        for tasks in list(self._inflight.values()):
            for task in tasks:
                task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        return sum(len(t) for t in self._inflight.values())

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

    # ------------------------------------------------------------------ generation

    async def generate(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> GenerationResult:
        (result,) = await self.generate_many([prompt], spec, request_id)
        return result

    async def generate_many(
        self, prompts: Sequence[Prompt], spec: SampleSpec, request_id: str
    ) -> list[GenerationResult]:
        if not prompts:
            return []
        if any(p.images for p in prompts):
            return await gather_all([self._generate_chat(p, spec, request_id) for p in prompts])
        spec, copies = spec.decode_once()
        body = self._completion_body(spec)
        body["prompt"] = [p.text for p in prompts]
        out = await self._call(request_id, "/completions", body)
        choices = sorted(out.get("choices") or [], key=lambda c: c["index"])
        if len(choices) != len(prompts) * spec.n:
            raise EngineError(f"upstream returned {len(choices)} choices for {len(prompts)} x n={spec.n}")
        prompt_tokens, cached = self._usage(out)
        results = []
        for i in range(len(prompts)):
            completions = repeat_completions(
                [self._completion(c, spec) for c in choices[i * spec.n:(i + 1) * spec.n]], copies
            )
            # Usage is reported for the whole call; spread it evenly over the prompts.
            results.append(
                GenerationResult(completions, prompt_tokens // len(prompts), cached // len(prompts))
            )
        return results

    async def _generate_chat(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> GenerationResult:
        """One prompt with images, through the chat endpoint (see the module docstring)."""
        spec, copies = spec.decode_once()
        body = self._completion_body(spec)
        body.update(await self._chat_fields(prompt, prompt.text))
        if spec.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = spec.logprobs
            body.pop("return_tokens_as_token_ids", None)
        out = await self._call(request_id, "/chat/completions", body)
        choices = sorted(out.get("choices") or [], key=lambda c: c["index"])
        if len(choices) != spec.n:
            raise EngineError(f"upstream returned {len(choices)} choices for n={spec.n}")
        completions = repeat_completions([self._chat_completion(c, spec) for c in choices], copies)
        return GenerationResult(completions, *self._usage(out))

    async def _chat_fields(self, prompt: Prompt, text: str) -> dict[str, Any]:
        if not self._accepts_images:
            raise InvalidArgumentError("images", f"model {self._model_id} does not accept images")
        urls = [await asyncio.to_thread(self._data_url, image) for image in prompt.images]
        parts: list[dict] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
        parts.append({"type": "text", "text": text})
        return {
            "messages": [{"role": "user", "content": parts}],
            "chat_template": PASS_THROUGH_TEMPLATE,
            "add_generation_prompt": False,
        }

    def _data_url(self, image: Any) -> str:
        key = id(image)
        entry = self._data_urls.get(key)
        if entry is not None and entry[0]() is image:
            return entry[1]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        self._data_urls[key] = (weakref.ref(image), url)
        weakref.finalize(image, self._data_urls.pop, key, None)
        return url

    @staticmethod
    def _chat_completion(choice: dict, spec: SampleSpec) -> Completion:
        token_lps: list[float] = []
        top_lps: list[list[float]] = []
        entries = ((choice.get("logprobs") or {}).get("content")) or []
        if spec.logprobs is not None:
            for entry in entries:
                token_lps.append(float(entry.get("logprob", float("nan"))))
                if spec.logprobs > 0:
                    values = sorted((float(t["logprob"]) for t in entry.get("top_logprobs") or []), reverse=True)
                    top_lps.append(values[: spec.logprobs])
        token_ids = choice.get("token_ids") or []
        return Completion(
            text=(choice.get("message") or {}).get("content") or "",
            num_tokens=len(token_ids) if token_ids else len(entries),
            finish_reason=choice.get("finish_reason"),
            token_logprobs=token_lps,
            top_logprobs=top_lps,
        )

    def _completion_body(self, spec: SampleSpec) -> dict[str, Any]:
        if spec.n < 1:
            raise InvalidArgumentError("n", "must be at least 1")
        if spec.max_tokens < 1:
            raise InvalidArgumentError("max_tokens", "must be at least 1")
        body: dict[str, Any] = {
            "model": self._model_id,
            "n": spec.n,
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "max_tokens": spec.max_tokens,
            # The prompt is fully rendered (template applied): no extra BOS, as in-process.
            "add_special_tokens": False,
            "return_token_ids": True,
        }
        if spec.seed is not None:
            body["seed"] = spec.seed
        if spec.stop:
            body["stop"] = list(spec.stop)
        if spec.logprobs is not None:
            body["logprobs"] = spec.logprobs
            body["return_tokens_as_token_ids"] = True
        if spec.json_schema is not None:
            body["structured_outputs"] = {"json": spec.json_schema}
        return body

    @staticmethod
    def _completion(choice: dict, spec: SampleSpec) -> Completion:
        token_ids = choice.get("token_ids") or []
        token_lps: list[float] = []
        top_lps: list[list[float]] = []
        logprobs = choice.get("logprobs")
        if spec.logprobs is not None and logprobs:
            token_lps = [float("nan") if lp is None else float(lp) for lp in logprobs.get("token_logprobs") or []]
            if spec.logprobs > 0:
                for alternatives in logprobs.get("top_logprobs") or []:
                    # vLLM adds the sampled token when it is not in the top k; keep the k best.
                    values = sorted((float(v) for v in (alternatives or {}).values()), reverse=True)
                    top_lps.append(values[: spec.logprobs])
        return Completion(
            text=choice.get("text") or "",
            num_tokens=len(token_ids) if token_ids else len(token_lps),
            finish_reason=choice.get("finish_reason"),
            token_logprobs=token_lps,
            top_logprobs=top_lps,
        )

    @staticmethod
    def _usage(out: dict) -> tuple[int, int]:
        usage = out.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return int(usage.get("prompt_tokens") or 0), int(details.get("cached_tokens") or 0)

    # ------------------------------------------------------------------ scoring

    async def score(self, items: Sequence[ScoreItem], request_id: str) -> list[ScoreResult]:
        if not items:
            return []
        encoded = await asyncio.to_thread(self._encode_items, list(items))
        if any(item.context.images for item in items):
            return await gather_all(
                [self._score_chat(item, cont, request_id) for item, (_, cont) in zip(items, encoded)]
            )
        body = {
            "model": self._model_id,
            "prompt": [ctx + cont for ctx, cont in encoded],
            "max_tokens": 1,
            "temperature": 0.0,
            # 0: only the logprob of each actual prompt token.
            "prompt_logprobs": 0,
            "add_special_tokens": False,
            "return_token_ids": True,
        }
        out = await self._call(request_id, "/completions", body)
        choices = sorted(out.get("choices") or [], key=lambda c: c["index"])
        if len(choices) != len(items):
            raise EngineError(f"upstream returned {len(choices)} scorings for {len(items)} items")
        return [self._score_result(c, ctx, cont) for c, (ctx, cont) in zip(choices, encoded)]

    def _encode_items(self, items: list[ScoreItem]) -> list[tuple[list[int], list[int]]]:
        tok = self._tokenizer
        encoded = []
        for i, item in enumerate(items):
            if item.context.images and not self._accepts_images:
                raise InvalidArgumentError(f"items[{i}].context.images", f"model {self._model_id} does not accept images")
            # Tokenized apart so the continuation's token span is exact (as in-process).
            ctx = list(tok.encode(item.context.text, add_special_tokens=False))
            cont = list(tok.encode(item.continuation, add_special_tokens=False))
            if not ctx:
                bos = getattr(tok, "bos_token_id", None)
                if bos is None:
                    raise InvalidArgumentError(f"items[{i}].context", "is empty and the model has no BOS token")
                ctx = [bos]
            encoded.append((ctx, cont))
        return encoded

    async def _score_chat(self, item: ScoreItem, cont: list[int], request_id: str) -> ScoreResult:
        """Score one context with images: the whole text goes through the chat endpoint (the image
        placeholders expand server-side), and the continuation is the tail of the prompt tokens."""
        body: dict[str, Any] = {
            "model": self._model_id, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0,
            "return_token_ids": True,
        }
        body.update(await self._chat_fields(item.context, item.context.text + item.continuation))
        out = await self._call(request_id, "/chat/completions", body)
        prompt_ids = list(out.get("prompt_token_ids") or [])
        if len(cont) and prompt_ids[-len(cont):] != cont:
            raise EngineError("the upstream tokenized the scored continuation differently from the sidecar")
        return self._score_result(out, prompt_ids[: len(prompt_ids) - len(cont)], cont)

    @staticmethod
    def _score_result(choice: dict, ctx: list[int], cont: list[int]) -> ScoreResult:
        prompt_ids = ctx + cont
        k = len(cont)
        if k == 0:
            return ScoreResult(logprob_sum=0.0, num_tokens=0, prompt_tokens=len(prompt_ids))
        plps = choice.get("prompt_logprobs")
        if not isinstance(plps, list) or len(plps) != len(prompt_ids):
            raise EngineError("upstream returned prompt logprobs that do not line up with the prompt")
        total = 0.0
        for pos in range(len(prompt_ids) - k, len(prompt_ids)):
            entry = plps[pos] or {}
            lp = entry.get(str(prompt_ids[pos]))
            if lp is None:
                raise EngineError(f"upstream returned no logprob for prompt position {pos}")
            total += float(lp["logprob"] if isinstance(lp, dict) else lp)
        return ScoreResult(logprob_sum=total, num_tokens=k, prompt_tokens=len(prompt_ids))

    # ------------------------------------------------------------------ HTTP, routing, abort

    async def _call(self, request_id: str, path: str, body: dict) -> dict:
        """POST to the request's replica, failing over along the ring; abortable by request id."""
        if self._session is None:
            raise EngineNotReadyError()
        if not request_id:
            raise InvalidArgumentError("request_id", "must be a non-empty string")
        task = asyncio.ensure_future(self._post_with_failover(request_id, path, body))
        self._inflight.setdefault(request_id, set()).add(task)
        try:
            return await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            tasks = self._inflight.get(request_id)
            if tasks is not None:
                tasks.discard(task)
                if not tasks:
                    del self._inflight[request_id]

    async def _post_with_failover(self, request_id: str, path: str, body: dict) -> dict:
        errors = []
        for attempt, replica in enumerate(self.ring.candidates(request_id)):
            try:
                out = await self._request(replica, "POST", path, body)
            except _ReplicaFailed as exc:
                replica.count("error")
                if self.ring.mark(replica, False, str(exc)):
                    logger.warning("upstream %s failed (%s); marked unhealthy", replica.url, exc)
                errors.append(f"{replica.url}: {exc}")
                continue
            replica.count("failover" if attempt else "ok")
            return out
        raise EngineError(f"every upstream failed for {request_id}: {'; '.join(errors)}", retryable=True)

    async def _request(
        self, replica: ReplicaState, method: str, path: str, body: dict | None, timeout: float | None = None
    ) -> dict:
        import aiohttp

        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._session.request(method, replica.url + path, **kwargs) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _ReplicaFailed(f"{type(exc).__name__}: {exc}") from exc
        if status >= 500 or status in (408, 429):
            raise _ReplicaFailed(f"HTTP {status}: {text[:300]}")
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise _ReplicaFailed(f"HTTP {status}, not JSON: {text[:200]}") from exc
        if status >= 400:
            raise self._client_error(status, payload)
        return payload

    @staticmethod
    def _client_error(status: int, payload: Any) -> Exception:
        error = payload.get("error", payload) if isinstance(payload, dict) else {}
        message = str(error.get("message") or payload)[:500]
        if error.get("param") == "input_tokens" or "maximum context length" in message:
            # vLLM's context-length check: the prompt built from the request is too long.
            return InvalidArgumentError("question", f"the prompt built from it does not fit the model's context: {message}")
        return EngineError(f"upstream rejected the request (HTTP {status}): {message}")

    async def abort(self, request_id: str) -> None:
        tasks = list(self._inflight.get(request_id, ()))
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            logger.debug("aborted %d upstream call(s) of %s", len(tasks), request_id)

