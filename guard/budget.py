"""Latency budgets: how much of a request's budget is left, and what the optional stages are expected to cost.

Sampling the paths is the one stage a guarded answer cannot do without. ARS generation, probing and
scoring refine the confidence; under a budget the pipeline skips them when the cost model says they
will not fit, and cuts them short (aborting their engine requests) when they overrun anyway.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """A request's latency budget as an absolute deadline on the monotonic clock (None: unbounded)."""

    deadline: float | None = None

    @classmethod
    def from_ms(cls, budget_ms: int | None, start: float | None = None) -> Budget:
        if budget_ms is None:
            return cls(None)
        return cls((time.monotonic() if start is None else start) + budget_ms / 1e3)

    @property
    def limited(self) -> bool:
        return self.deadline is not None

    def remaining_ms(self) -> float:
        if self.deadline is None:
            return math.inf
        return (self.deadline - time.monotonic()) * 1e3


class StageCostModel:
    """Exponentially weighted mean of milliseconds per engine item, per optional stage.

    Probing issues N x K short generations and scoring one teacher-forced pass per candidate; both
    run as one concurrent batch whose wall time grows with its size, so cost per item is the unit.
    Shared by all requests of a pipeline (updated from the event loop; the lock keeps it safe if not).
    """

    def __init__(self, alpha: float = 0.3):
        self.alpha = alpha
        self._per_item_ms: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, stage: str, items: int, elapsed_ms: float) -> None:
        if items <= 0 or elapsed_ms <= 0:
            return
        sample = elapsed_ms / items
        with self._lock:
            old = self._per_item_ms.get(stage)
            self._per_item_ms[stage] = sample if old is None else old + self.alpha * (sample - old)

    def estimate_ms(self, stage: str, items: int) -> float | None:
        """Expected wall time of `items` items of `stage`; None until the stage has been observed."""
        per_item = self._per_item_ms.get(stage)
        return None if per_item is None else per_item * items
