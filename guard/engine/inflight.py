"""Engine work in flight per request id (what `abort` stops), and the submission errors both engines raise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from guard.errors import InvalidArgumentError

H = TypeVar("H")


class InFlight(Generic[H]):
    """Request id -> the handles (engine request ids, HTTP tasks) submitted for it and not yet done."""

    def __init__(self) -> None:
        self._by_request: dict[str, set[H]] = {}

    @contextlib.contextmanager
    def track(self, request_id: str, handle: H) -> Iterator[H]:
        """Count `handle` under `request_id` while the block runs."""
        self._by_request.setdefault(request_id, set()).add(handle)
        try:
            yield handle
        finally:
            handles = self._by_request.get(request_id)
            if handles is not None:
                handles.discard(handle)
                if not handles:
                    del self._by_request[request_id]

    def of(self, request_id: str) -> list[H]:
        return list(self._by_request.get(request_id, ()))

    def all(self) -> list[H]:
        return [h for handles in self._by_request.values() for h in handles]

    def count(self) -> int:
        return sum(len(handles) for handles in self._by_request.values())

    def clear(self) -> None:
        self._by_request.clear()


def require_request_id(request_id: object) -> None:
    if not isinstance(request_id, str) or not request_id:
        raise InvalidArgumentError("request_id", "must be a non-empty string")


def context_overflow(detail: object) -> InvalidArgumentError:
    """vLLM's context-length check failed: the prompt built from the request is too long."""
    return InvalidArgumentError("question", f"the prompt built from it does not fit the model's context: {detail}")
