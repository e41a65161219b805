"""One Guard request past conversion: its A/B arm, admission, the pipeline run, metrics, shadow run, decision log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from guard.errors import EngineError, EngineNotReadyError, InvalidArgumentError
from guard.events import EventSink, ProvisionalEvent, RetractReason, Timed, retraction
from guard.params import GuardParams
from guard.pipeline import GuardPipeline
from guard.result import GuardResult
from server.admission import Admission
from server.arms import Arm, ArmSplitter, Assignment
from server.decision_log import DecisionLog, decision_record
from server.metrics import GuardMetrics


@dataclass(frozen=True)
class StreamDecision:
    """The last item of a streamed request: its result, arm, and why it retracts the provisional answer."""

    result: GuardResult
    arm: Arm
    retract: RetractReason | None
    elapsed_ms: float


class RequestHandler:
    """What the sidecar does with a validated request; the servicer only converts around `handle`."""

    def __init__(
        self, pipeline: GuardPipeline, metrics: GuardMetrics, admission: Admission,
        splitter: ArmSplitter | None = None, decision_log: DecisionLog | None = None, shadow=None,
    ):
        self.pipeline = pipeline
        self.metrics = metrics
        self.admission = admission
        self.splitter = splitter or ArmSplitter()
        self.decision_log = decision_log
        # server.shadow.ShadowRunner, required when the splitter (or a request) can pick SHADOW.
        self.shadow = shadow
        # Set at shutdown: new requests are refused (retryable) while in-flight ones finish.
        self.draining = False

    async def handle(
        self, params: GuardParams, *, ab_key: str, requested_arm: Arm | None, timeout_seconds: float | None,
        started_at: float, events: EventSink | None = None,
    ) -> tuple[GuardResult, Arm]:
        """Run `params` in its A/B arm within `timeout_seconds`; the result and the arm it was served in.

        `ab_key` is the (checked) key the split hashes, empty for the request id; `started_at` is the
        `time.perf_counter()` at which the call arrived, for the request-duration metric; `events`
        receives the request's events as it runs (see `stream`).
        """
        arm, assignment = self.splitter.assign(ab_key or params.request_id, requested_arm)
        if arm is Arm.SHADOW and self.shadow is None:
            raise InvalidArgumentError("arm", "shadow is not enabled on this server (serve --shadow)")
        # The arm decides the mode: a split or a forced arm overrides the request's own.
        params = replace(params, mode=arm.mode)
        self._check_serving()
        self.metrics.arm_requests.labels(arm.value, assignment.value).inc()
        async with self.admission.slot():
            with self.metrics.in_flight.track_inprogress():
                result = await asyncio.wait_for(self.pipeline.run(params, events), timeout_seconds)
        self.metrics.record(result, time.perf_counter() - started_at, arm=arm.value)
        self._after(params, result, arm, assignment)
        return result, arm

    async def stream(
        self, params: GuardParams, *, ab_key: str, requested_arm: Arm | None, timeout_seconds: float | None,
        started_at: float,
    ) -> AsyncIterator[Timed | StreamDecision]:
        """`handle`, reporting as it goes: the request's events as they happen, then the decision and
        whether it retracts the provisional answer. Closing the iterator early cancels the request (its
        engine work is aborted)."""
        queue: asyncio.Queue[Timed] = asyncio.Queue()
        task = asyncio.ensure_future(self.handle(
            params, ab_key=ab_key, requested_arm=requested_arm, timeout_seconds=timeout_seconds,
            started_at=started_at, events=queue.put_nowait,
        ))
        provisional = None
        try:
            while not (task.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                timed = getter.result()
                if isinstance(timed.event, ProvisionalEvent) and provisional is None:
                    provisional = timed.event
                    self.metrics.stream_provisional.observe(time.perf_counter() - started_at)
                yield timed
            result, arm = task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        retract = retraction(provisional, result)
        self.metrics.record_stream(retract, provisional is not None, time.perf_counter() - started_at)
        yield StreamDecision(result, arm, retract, (time.perf_counter() - started_at) * 1e3)

    def _check_serving(self) -> None:
        if self.draining:
            raise EngineError("server is shutting down", retryable=True)
        if not self.pipeline.engine.ready:
            raise EngineNotReadyError()

    def _after(self, params: GuardParams, result: GuardResult, arm: Arm, assignment: Assignment) -> None:
        """Once the caller's answer is ready: the shadow arm's background guard run, or the decision log."""
        if arm is Arm.SHADOW:
            # Outside the admission slots: the shadow runner bounds its own engine use.
            self.shadow.submit(params, result, assignment.value)
        elif self.decision_log is not None:
            field = "guarded" if arm is Arm.GUARD else "raw"
            record = decision_record(params.request_id, arm.value, assignment.value, params.question,
                                     **{field: result})
            self.metrics.count_decision_log(self.decision_log.submit(record))
