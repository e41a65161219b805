"""The GuardService gRPC handlers: convert, await the pipeline, convert back."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import grpc

import guard
from guard.errors import EngineError, EngineNotReadyError, InvalidArgumentError
from guard.pipeline import GuardPipeline
from guard.scorers import SCORERS
from server.admission import Admission
from server.arms import Arm, ArmSplitter, check_ab_key
from server.convert import MODE_TO_PB, request_to_params, requested_arm, result_to_response
from server.decision_log import DecisionLog, decision_record
from server.metrics import GuardMetrics
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc


class GuardServicer(guard_pb2_grpc.GuardServiceServicer):
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
        self.draining = False

    async def Guard(self, request: pb.GuardRequest, context: grpc.aio.ServicerContext) -> pb.GuardResponse:
        start = time.perf_counter()
        config = self.pipeline.config
        params = request_to_params(request, config.defaults, config.limits, request.request_id or uuid.uuid4().hex)
        key = check_ab_key(request.ab_key) or params.request_id
        arm, assignment = self.splitter.assign(key, requested_arm(request))
        if arm is Arm.SHADOW and self.shadow is None:
            raise InvalidArgumentError("arm", "shadow is not enabled on this server (serve --shadow)")
        params = replace(params, mode=arm.mode)
        if self.draining:
            raise EngineError("server is shutting down", retryable=True)
        if not self.pipeline.engine.ready:
            raise EngineNotReadyError()
        self.metrics.arm_requests.labels(arm.value, assignment.value).inc()
        async with self.admission.slot():
            with self.metrics.in_flight.track_inprogress():
                timeout = context.time_remaining()
                result = await asyncio.wait_for(self.pipeline.run(params), timeout)
        self.metrics.record(result, time.perf_counter() - start, arm=arm.value)
        if arm is Arm.SHADOW:
            # The caller's answer is ready; the guard runs after, outside the admission slots.
            self.shadow.submit(params, result, assignment.value)
        elif self.decision_log is not None:
            field = "guarded" if arm is Arm.GUARD else "raw"
            record = decision_record(params.request_id, arm.value, assignment.value, params.question,
                                     **{field: result})
            self.metrics.count_decision_log(self.decision_log.submit(record))
        return result_to_response(result, params.return_paths_text, arm)

    async def GetInfo(self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext) -> pb.GetInfoResponse:
        engine = self.pipeline.engine
        config = self.pipeline.config
        info = engine.info()
        d, lim = config.defaults, config.limits
        return pb.GetInfoResponse(
            model=info.name,
            engine=info.engine,
            max_model_len=info.max_model_len,
            accepts_images=info.accepts_images,
            defaults=pb.Defaults(
                num_paths=d.num_paths,
                temperature=d.temperature,
                top_p=d.top_p,
                max_tokens=d.max_tokens,
                mode=MODE_TO_PB[d.mode],
                scorer=d.scorer,
                threshold=config.policy.threshold_for(d.scorer),
                score_mode=d.score_mode.value,
            ),
            limits=pb.Limits(
                max_num_paths=lim.max_num_paths,
                max_tokens=lim.max_tokens,
                max_question_chars=lim.max_question_chars,
                max_sub_questions=lim.max_sub_questions,
                max_images=lim.max_images,
                max_image_bytes=lim.max_image_bytes,
                max_image_pixels=lim.max_image_pixels,
                max_concurrent_requests=self.admission.max_concurrent,
                max_queued_requests=self.admission.max_queued,
            ),
            scorers=sorted(SCORERS),
            version=guard.__version__,
            ready=engine.ready,
            guard_fraction=self.splitter.guard_fraction,
            shadow=self.shadow is not None,
        )
