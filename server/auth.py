"""Bearer-token authentication for every RPC (health optionally exempt), compared in constant time."""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def load_token(token_file: str | None, env_var: str = "TRACE_GUARD_AUTH_TOKEN") -> str | None:
    """The expected token from a file (first line) or an environment variable; None disables auth."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"auth token file {token_file} is empty")
        return token
    return os.environ.get(env_var) or None


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, *, health_open: bool = True):
        self._expected = f"Bearer {token}".encode()
        self._health_open = health_open

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if self._health_open and method.startswith(HEALTH_PREFIX):
            return await continuation(handler_call_details)
        supplied = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                supplied = value.encode() if isinstance(value, str) else value
                break
        # compare_digest: the time taken does not reveal how much of the token matched.
        if hmac.compare_digest(supplied, self._expected):
            return await continuation(handler_call_details)
        logger.info("%s: rejected unauthenticated call", method)
        return _deny(await continuation(handler_call_details))


_DENIED = (grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


async def _deny_unary(request, context: grpc.aio.ServicerContext):
    await context.abort(*_DENIED)


async def _deny_streaming(request, context: grpc.aio.ServicerContext):
    await context.abort(*_DENIED)
    yield  # pragma: no cover - unreachable; makes this an async generator for streaming responses


def _deny(handler):
    """A handler of the same kind as `handler` that ends the call with UNAUTHENTICATED."""
    if handler is None:
        return None
    kinds = [
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, _deny_unary),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, _deny_streaming),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, _deny_unary),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, _deny_streaming),
    ]
    for behaviour, make, deny in kinds:
        if behaviour is not None:
            return make(
                deny, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return None


def server_credentials(cert_file: str, key_file: str, client_ca_file: str | None) -> grpc.ServerCredentials:
    """TLS credentials; with a client CA, clients must present a certificate it signed (mutual TLS)."""
    key = Path(key_file).read_bytes()
    cert = Path(cert_file).read_bytes()
    ca = Path(client_ca_file).read_bytes() if client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
