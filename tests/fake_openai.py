"""A fake vLLM OpenAI-compatible server for unit tests of the upstream engine (never used by the package)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class FakeOpenAI:
    """Answers /health, /v1/models and /v1/completions like vLLM, scripted.

    completion: prompt -> text for generated choices. Scoring requests (prompt_logprobs set) get
    logprob -0.5 for every prompt token.
    """

    completion: str = " 12"
    model: str = "fake-model"
    root: str = ""
    max_model_len: int = 2048
    status: int = 200          # HTTP status of /v1/completions (e.g. 500: a broken replica)
    error_body: dict | None = None
    healthy: bool = True
    hang: bool = False         # /v1/completions never answers (until the client goes away)
    requests: list[dict] = field(default_factory=list)
    cancelled: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "root": self.root or self.model, "max_model_len": self.max_model_len}
        ]})

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.status != 200:
            return web.json_response(self.error_body or {"error": {"message": "boom"}}, status=self.status)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        n = body.get("n", 1)
        choices = []
        for i, prompt in enumerate(prompts):
            for j in range(n):
                choice = {"index": i * n + j, "text": self.completion, "finish_reason": "stop",
                          "token_ids": [11, 12]}
                if body.get("logprobs") is not None:
                    choice["logprobs"] = {
                        "tokens": ["token_id:11", "token_id:12"], "token_logprobs": [-0.25, -0.5],
                        "top_logprobs": [{"token_id:11": -0.25, "token_id:9": -2.0, "token_id:8": -3.0}] * 2,
                    }
                if body.get("prompt_logprobs") is not None:
                    choice["prompt_logprobs"] = [None] + [
                        {str(t): {"logprob": -0.5, "rank": 1, "decoded_token": "x"}} for t in prompt[1:]
                    ]
                choices.append(choice)
        return web.json_response({
            "id": "cmpl-1", "object": "text_completion", "model": self.model, "choices": choices,
            "usage": {"prompt_tokens": 10 * len(prompts), "completion_tokens": 2 * len(choices),
                      "total_tokens": 0, "prompt_tokens_details": {"cached_tokens": 4 * len(prompts)}},
        })
