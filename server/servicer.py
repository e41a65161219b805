"""The GuardService gRPC handlers: convert, call the request handler, convert back."""

from __future__ import annotations

import contextlib
import time
import uuid

import grpc

from server.arms import check_ab_key
from server.convert import (
    decision_to_pb,
    event_to_pb,
    info_to_response,
    request_to_params,
    requested_arm,
    result_to_response,
)
from server.handler import RequestHandler, StreamDecision
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc


class GuardServicer(guard_pb2_grpc.GuardServiceServicer):
    def __init__(self, handler: RequestHandler):
        self.handler = handler

    async def Guard(self, request: pb.GuardRequest, context: grpc.aio.ServicerContext) -> pb.GuardResponse:
        start = time.perf_counter()
        config = self.handler.pipeline.config
        params = request_to_params(request, config.defaults, config.limits, request.request_id or uuid.uuid4().hex)
        result, arm = await self.handler.handle(
            params, ab_key=check_ab_key(request.ab_key), requested_arm=requested_arm(request),
            timeout_seconds=context.time_remaining(), started_at=start,
        )
        return result_to_response(result, params.return_paths_text, arm)

    async def GuardStream(self, request: pb.GuardRequest, context: grpc.aio.ServicerContext):
        start = time.perf_counter()
        config = self.handler.pipeline.config
        params = request_to_params(request, config.defaults, config.limits, request.request_id or uuid.uuid4().hex)
        items = self.handler.stream(
            params, ab_key=check_ab_key(request.ab_key), requested_arm=requested_arm(request),
            timeout_seconds=context.time_remaining(), started_at=start,
        )
        # aclosing: a cancelled call closes the handler's stream at once, which cancels the request.
        async with contextlib.aclosing(items):
            async for item in items:
                if isinstance(item, StreamDecision):
                    response = result_to_response(item.result, params.return_paths_text, item.arm)
                    yield decision_to_pb(response, item.retract, item.elapsed_ms)
                else:
                    yield event_to_pb(item, params.return_paths_text)

    async def GetInfo(self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext) -> pb.GetInfoResponse:
        h = self.handler
        return info_to_response(h.pipeline.engine, h.pipeline.config, h.admission, h.splitter,
                                shadow=h.shadow is not None)
