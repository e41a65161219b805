"""Stages of a request: their names, their typed outcomes, and the clock that times them."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from guard.budget import Budget
from guard.result import PhaseUsage

T = TypeVar("T")


class Stage(str, enum.Enum):
    """Stage names as timings, usage phases, degraded stages, metrics labels and the response use them.

    A `str` enum: a member equals, hashes and prints as its value, so dicts keyed by it read by
    plain strings too (the proto and Prometheus see "probe").
    """

    VALIDATE = "validate"
    SAMPLE = "sample"
    EXTRACT = "extract"
    ARS = "ars"
    PROBE = "probe"
    SCORE = "score"
    DECIDE = "decide"
    TOTAL = "total"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StageOutcome(Generic[T]):
    """What an optional stage produced: its value (None when skipped or cut short), the engine tokens it
    used, and, when it could not do its whole job, which stages degraded and a note saying why."""

    value: T | None
    usage: dict[Stage, PhaseUsage] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    degraded: tuple[Stage, ...] = ()

    @classmethod
    def skipped(cls, note: str, *degraded: Stage, usage: dict[Stage, PhaseUsage] | None = None) -> StageOutcome[T]:
        return cls(None, dict(usage or {}), (note,), degraded)


class StageClock:
    """Per-stage wall times and the time the request spent blocked on the engine."""

    def __init__(self) -> None:
        self.timings_ms: dict[Stage, float] = {}
        self.engine_wait_ms = 0.0
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: Stage) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - start) * 1e3)

    def add(self, name: Stage, elapsed_ms: float) -> None:
        self.timings_ms[name] = self.timings_ms.get(name, 0.0) + elapsed_ms

    def stop(self) -> dict[Stage, float]:
        """All timings, with the total since the clock started."""
        self.timings_ms[Stage.TOTAL] = (time.perf_counter() - self._start) * 1e3
        return dict(self.timings_ms)

    async def engine(self, awaitable: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.engine_wait_ms += (time.perf_counter() - start) * 1e3


async def within_budget(awaitable: Awaitable[T], budget: Budget) -> T | None:
    """Await within what is left of the budget; None (and the work cancelled) when it runs out.

    Cancelling a stage cancels its engine calls, which aborts their engine requests.
    """
    if not budget.limited:
        return await awaitable
    task = asyncio.ensure_future(awaitable)
    remaining = budget.remaining_ms()
    if remaining > 0:
        done, _ = await asyncio.wait([task], timeout=remaining / 1e3)
        if done:
            return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


def budget_note(remaining_ms: float, expected_ms: float | None) -> str:
    left = f"{max(0.0, remaining_ms):.0f} ms of the budget left"
    return left if expected_ms is None else f"{left}, about {expected_ms:.0f} ms needed"
