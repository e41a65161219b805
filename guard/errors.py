"""Typed errors of the guard: client errors name the offending field, server errors say which part failed."""

from __future__ import annotations


class GuardError(Exception):
    """Base class of every error the guard raises on purpose."""


class InvalidArgumentError(GuardError, ValueError):
    """The request is malformed; `field` names the offending request field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ResourceExhaustedError(GuardError):
    """The server is at capacity; the client may retry later."""


class DeadlineExceededError(GuardError):
    """The request's deadline or latency budget ran out before the guard could answer."""


class EngineError(GuardError):
    """The model engine failed or is not available."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        # retryable: the engine is (temporarily) unavailable rather than broken by this request.
        self.retryable = retryable


class EngineNotReadyError(EngineError):
    def __init__(self, message: str = "engine is still starting"):
        super().__init__(message, retryable=True)
