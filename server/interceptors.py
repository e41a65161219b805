"""Maps the guard's typed errors (and anything unexpected) to gRPC status codes, counts and logs them once."""

from __future__ import annotations

import asyncio
import logging

import grpc

from guard.errors import (
    DeadlineExceededError,
    EngineError,
    InvalidArgumentError,
    ResourceExhaustedError,
)
from server.metrics import GuardMetrics

logger = logging.getLogger(__name__)


def status_for(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, InvalidArgumentError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, ResourceExhaustedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, (DeadlineExceededError, asyncio.TimeoutError, TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, EngineError):
        return grpc.StatusCode.UNAVAILABLE if exc.retryable else grpc.StatusCode.INTERNAL
    return grpc.StatusCode.INTERNAL


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: GuardMetrics):
        self.metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        deserialize = handler.request_deserializer

        async def parse(raw_request, context: grpc.aio.ServicerContext):
            # Deserialize here rather than in gRPC, which answers a malformed message with INTERNAL:
            # bytes that are not the method's request message are the client's error.
            try:
                return deserialize(raw_request) if deserialize is not None else raw_request
            except Exception as exc:
                self.metrics.errors.labels(grpc.StatusCode.INVALID_ARGUMENT.name).inc()
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid message for {method}: {exc}"
                )

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(raw_request, context: grpc.aio.ServicerContext):
                request = await parse(raw_request, context)
                try:
                    return await inner(request, context)
                except asyncio.CancelledError:
                    self.metrics.errors.labels(grpc.StatusCode.CANCELLED.name).inc()
                    raise
                except Exception as exc:
                    await self._fail(context, method, exc)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=None, response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def streaming(raw_request, context: grpc.aio.ServicerContext):
                request = await parse(raw_request, context)
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except asyncio.CancelledError:
                    self.metrics.errors.labels(grpc.StatusCode.CANCELLED.name).inc()
                    raise
                except Exception as exc:
                    await self._fail(context, method, exc)

            return grpc.unary_stream_rpc_method_handler(
                streaming, request_deserializer=None, response_serializer=handler.response_serializer,
            )
        return handler

    async def _fail(self, context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
        """End the call with the status `exc` maps to (context.abort raises to end it)."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        code = status_for(exc)
        self.metrics.errors.labels(code.name).inc()
        if code is grpc.StatusCode.INTERNAL:
            logger.exception("%s failed", method)
            message = f"internal error: {exc}"
        else:
            logger.info("%s: %s: %s", method, code.name, exc)
            message = str(exc)
        await context.abort(code, message)
