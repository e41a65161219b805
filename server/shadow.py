"""Shadow mode: the guard runs on a request in the background after the caller got its raw answer."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from guard.params import GuardParams, Mode
from guard.pipeline import GuardPipeline
from guard.result import GuardResult
from server.decision_log import DecisionLog, decision_record
from server.metrics import GuardMetrics

logger = logging.getLogger(__name__)


class ShadowRunner:
    """Bounded background guard runs.

    At most `max_concurrent` shadow runs use the engine at once and at most `max_pending` wait
    or run; beyond that, shadow work is dropped (counted, and logged as such), so shadow traffic
    never queues behind itself or delays callers.
    """

    def __init__(self, pipeline: GuardPipeline, metrics: GuardMetrics, decision_log: DecisionLog | None,
                 *, max_pending: int = 32, max_concurrent: int = 2, timeout_seconds: float = 300.0):
        self.pipeline = pipeline
        self.metrics = metrics
        self.decision_log = decision_log
        self.max_pending = max_pending
        self.timeout_seconds = timeout_seconds
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task] = set()
        metrics.shadow_pending.set_function(lambda: float(len(self._tasks)))

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def submit(self, params: GuardParams, raw: GuardResult, assignment: str) -> bool:
        """Schedule the guarded run of `params` (already answered raw); False if dropped."""
        if len(self._tasks) >= self.max_pending:
            self._finish(params, raw, assignment, None, "dropped")
            return False
        guarded = replace(params, mode=Mode.GUARD, request_id=f"{params.request_id}:shadow")
        task = asyncio.create_task(self._run(guarded, params, raw, assignment))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, guarded: GuardParams, params: GuardParams, raw: GuardResult, assignment: str) -> None:
        status, result = "error", None
        try:
            async with self._slots:
                start = time.perf_counter()
                result = await asyncio.wait_for(self.pipeline.run(guarded), self.timeout_seconds)
                self.metrics.record(result, time.perf_counter() - start, arm="shadow")
                status = "done"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except asyncio.TimeoutError:
            status = "timeout"
        except Exception as exc:
            logger.warning("request %s: shadow guard failed: %s", params.request_id, exc)
            status = "error"
        finally:
            self._finish(params, raw, assignment, result, status)

    def _finish(self, params: GuardParams, raw: GuardResult, assignment: str,
                guarded: GuardResult | None, status: str) -> None:
        self.metrics.shadow_runs.labels(status).inc()
        if status == "dropped":
            self.metrics.shadow_dropped.inc()
        if self.decision_log is not None:
            record = decision_record(params.request_id, "shadow", assignment, params.question,
                                     raw=raw, guarded=guarded, shadow_status=status)
            self.metrics.count_decision_log(self.decision_log.submit(record))

    async def drain(self, timeout_seconds: float) -> None:
        """Let running shadow work finish within the timeout, then cancel (and log) the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.0, timeout_seconds))
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("cancelled %d shadow run(s) at shutdown", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
