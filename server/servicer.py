"""The GuardService gRPC handlers: convert, call the request handler, convert back."""

from __future__ import annotations

import time
import uuid

import grpc

from server.arms import check_ab_key
from server.convert import info_to_response, request_to_params, requested_arm, result_to_response
from server.handler import RequestHandler
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

    async def GetInfo(self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext) -> pb.GetInfoResponse:
        h = self.handler
        return info_to_response(h.pipeline.engine, h.pipeline.config, h.admission, h.splitter,
                                shadow=h.shadow is not None)
