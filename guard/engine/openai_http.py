"""Pooled async HTTP to upstream vLLM servers: routing by request id, failover, health checks and abort."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from guard.engine.inflight import InFlight, context_overflow, require_request_id
from guard.engine.upstream import ReplicaRing, ReplicaState
from guard.errors import EngineError, EngineNotReadyError

logger = logging.getLogger(__name__)


class ReplicaFailed(Exception):
    """The replica could not serve the call (down, 5xx, timeout): try the next one."""


def api_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _server_root(base: str) -> str:
    return base[: -len("/v1")]


def client_error(status: int, payload: Any) -> Exception:
    """The typed error for a 4xx answer: the request's fault, not the replica's."""
    error = payload.get("error", payload) if isinstance(payload, dict) else {}
    message = str(error.get("message") or payload)[:500]
    if error.get("param") == "input_tokens" or "maximum context length" in message:
        return context_overflow(message)
    return EngineError(f"upstream rejected the request (HTTP {status}): {message}")


class UpstreamClient:
    """One aiohttp session to every replica of the ring; each call is abortable by its request id."""

    def __init__(
        self,
        bases: Sequence[str],
        *,
        api_key: str | None,
        connect_timeout_seconds: float,
        request_timeout_seconds: float,
        max_connections: int,
    ) -> None:
        self.ring = ReplicaRing(bases)
        self._api_key = api_key
        self._connect_timeout = connect_timeout_seconds
        self._request_timeout = request_timeout_seconds
        self._max_connections = max_connections
        self._session: Any = None  # aiohttp.ClientSession
        # request id -> HTTP calls in flight; abort() cancels them (closing the connection makes
        # vLLM abort the request server-side).
        self._inflight: InFlight[asyncio.Task] = InFlight()

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def open(self) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=self._request_timeout, sock_connect=self._connect_timeout),
            headers=headers,
        )

    async def close(self) -> None:
        """Cancel every call in flight and close the session."""
        for task in self._inflight.all():
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def num_in_flight(self) -> int:
        return self._inflight.count()

    # ------------------------------------------------------------------ health

    async def check_all(self) -> None:
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

    async def health_loop(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.check_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed round is retried next interval.
                logger.exception("upstream health round failed")

    # ------------------------------------------------------------------ calls

    async def call(self, request_id: str, path: str, body: dict) -> dict:
        """POST to the request's replica, failing over along the ring; abortable by request id."""
        if self._session is None:
            raise EngineNotReadyError()
        require_request_id(request_id)
        task = asyncio.ensure_future(self._post_with_failover(request_id, path, body))
        with self._inflight.track(request_id, task):
            try:
                return await task
            except asyncio.CancelledError:
                task.cancel()
                raise

    async def _post_with_failover(self, request_id: str, path: str, body: dict) -> dict:
        errors = []
        for attempt, replica in enumerate(self.ring.candidates(request_id)):
            try:
                out = await self.request(replica, "POST", path, body)
            except ReplicaFailed as exc:
                replica.count("error")
                if self.ring.mark(replica, False, str(exc)):
                    logger.warning("upstream %s failed (%s); marked unhealthy", replica.url, exc)
                errors.append(f"{replica.url}: {exc}")
                continue
            replica.count("failover" if attempt else "ok")
            return out
        raise EngineError(f"every upstream failed for {request_id}: {'; '.join(errors)}", retryable=True)

    async def request(
        self, replica: ReplicaState, method: str, path: str, body: dict | None, timeout: float | None = None
    ) -> dict:
        """One HTTP call to one replica; ReplicaFailed when the replica (not the request) is at fault."""
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
            raise ReplicaFailed(f"{type(exc).__name__}: {exc}") from exc
        if status >= 500 or status in (408, 429):
            raise ReplicaFailed(f"HTTP {status}: {text[:300]}")
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise ReplicaFailed(f"HTTP {status}, not JSON: {text[:200]}") from exc
        if status >= 400:
            raise client_error(status, payload)
        return payload

    async def abort(self, request_id: str) -> None:
        tasks = self._inflight.of(request_id)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            logger.debug("aborted %d upstream call(s) of %s", len(tasks), request_id)
