"""Conversion between generated protobuf messages and the guard's own types (the only place both meet)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import guard
from guard.answers import Answer
from guard.events import ArsEvent, PathEvent, ProgressEvent, ProvisionalEvent, RetractReason, Timed
from guard.params import Defaults, GuardParams, ImageInput, Limits, Mode
from guard.result import (
    AbstainReason,
    ArsSource,
    Decision,
    GuardResult,
    PathResult,
    PhaseUsage,
    ProbeAnswerSource,
    Region,
    SubQuestionResult,
)
from guard.sampling import SamplingReport
from guard.scorers import SCORERS
from server.arms import Arm, ArmSplitter
from server.pb import guard_pb2 as pb

if TYPE_CHECKING:
    from guard.engine import Engine
    from guard.pipeline import GuardConfig
    from server.admission import Admission

_MODE_FROM_PB = {pb.MODE_GUARD: Mode.GUARD, pb.MODE_RAW: Mode.RAW}
MODE_TO_PB = {Mode.GUARD: pb.MODE_GUARD, Mode.RAW: pb.MODE_RAW}
_DECISION_TO_PB = {Decision.ACCEPT: pb.DECISION_ACCEPT, Decision.ABSTAIN: pb.DECISION_ABSTAIN, Decision.RAW: pb.DECISION_RAW}
_REASON_TO_PB = {
    None: pb.ABSTAIN_REASON_UNSPECIFIED,
    AbstainReason.NO_ANSWER: pb.ABSTAIN_REASON_NO_ANSWER,
    AbstainReason.LOW_CONFIDENCE: pb.ABSTAIN_REASON_LOW_CONFIDENCE,
    AbstainReason.SILENT_FAILURE: pb.ABSTAIN_REASON_SILENT_FAILURE,
    AbstainReason.TIE: pb.ABSTAIN_REASON_TIE,
}
_REGION_TO_PB = {
    None: pb.REGION_UNSPECIFIED,
    Region.RELIABLE: pb.REGION_RELIABLE,
    Region.SILENT_RISK: pb.REGION_SILENT_RISK,
    Region.UNCERTAIN: pb.REGION_UNCERTAIN,
    Region.NO_ANSWER: pb.REGION_NO_ANSWER,
}
_ARS_TO_PB = {
    ArsSource.NONE: pb.ARS_SOURCE_NONE,
    ArsSource.REQUEST: pb.ARS_SOURCE_REQUEST,
    ArsSource.CACHE: pb.ARS_SOURCE_CACHE,
    ArsSource.MODEL: pb.ARS_SOURCE_MODEL,
}
_SOURCE_TO_PB = {
    None: pb.PROBE_ANSWER_SOURCE_UNSPECIFIED,
    ProbeAnswerSource.FINAL_ANSWER: pb.PROBE_ANSWER_SOURCE_FINAL_ANSWER,
    ProbeAnswerSource.PATH_VALUE: pb.PROBE_ANSWER_SOURCE_PATH_VALUE,
    ProbeAnswerSource.OTHER: pb.PROBE_ANSWER_SOURCE_OTHER,
}


ARM_TO_PB = {Arm.GUARD: pb.ARM_GUARD, Arm.RAW: pb.ARM_RAW, Arm.SHADOW: pb.ARM_SHADOW}
_ARM_FROM_PB = {v: k for k, v in ARM_TO_PB.items()}


def requested_arm(req: pb.GuardRequest) -> Arm | None:
    """The arm the request forces, if any: `arm`, else an explicitly set `mode`."""
    from guard.errors import InvalidArgumentError

    if req.arm != pb.ARM_UNSPECIFIED:
        if req.arm not in _ARM_FROM_PB:
            raise InvalidArgumentError("arm", f"unknown arm value {req.arm}")
        return _ARM_FROM_PB[req.arm]
    if req.mode == pb.MODE_GUARD:
        return Arm.GUARD
    if req.mode == pb.MODE_RAW:
        return Arm.RAW
    return None


def _opt(msg, name: str):
    return getattr(msg, name) if msg.HasField(name) else None


def request_to_params(req: pb.GuardRequest, defaults: Defaults, limits: Limits, request_id: str) -> GuardParams:
    """Build validated params; raises InvalidArgumentError naming the bad field."""
    from guard.errors import InvalidArgumentError

    if req.mode not in (pb.MODE_UNSPECIFIED, *_MODE_FROM_PB):
        raise InvalidArgumentError("mode", f"unknown mode value {req.mode}")
    return GuardParams.build(
        defaults=defaults,
        limits=limits,
        question=req.question,
        images=tuple(ImageInput(img.data, img.mime_type) for img in req.images),
        system_prompt=req.system_prompt,
        sub_questions=tuple(req.sub_questions),
        num_paths=_opt(req, "num_paths"),
        temperature=_opt(req, "temperature"),
        top_p=_opt(req, "top_p"),
        max_tokens=_opt(req, "max_tokens"),
        seed=_opt(req, "seed"),
        mode=_MODE_FROM_PB.get(req.mode),
        request_id=request_id,
        return_paths_text=req.return_paths_text,
        scorer=req.scorer or None,
        score_mode=req.score_mode or None,
        latency_budget_ms=_opt(req, "latency_budget_ms"),
        adaptive=_opt(req, "adaptive"),
        min_paths=_opt(req, "min_paths"),
        stop_level=_opt(req, "stop_level"),
        parallel_paths=_opt(req, "parallel_paths"),
        confidence_abort=_opt(req, "confidence_abort"),
        confidence_warmup=_opt(req, "confidence_warmup"),
        confidence_keep=_opt(req, "confidence_keep"),
        max_total_tokens=_opt(req, "max_total_tokens"),
    )


def _answer(answer: Answer | None) -> pb.Answer | None:
    return pb.Answer(raw=answer.raw, normalized=answer.normalized) if answer is not None else None


def _path_to_pb(p: PathResult, return_paths_text: bool) -> pb.PathResult:
    return pb.PathResult(
        index=p.index,
        answer=_answer(p.answer),
        score=p.score,
        text=p.text if return_paths_text else "",
        num_tokens=p.num_tokens,
        finish_reason=p.finish_reason or "",
        mean_token_logprob=p.mean_token_logprob,
        support=p.support,
        first_failure_step=p.first_failure_step or 0,
        in_winning_cluster=p.in_winning_cluster,
        path_values=p.path_values,
    )


def _sub_question_to_pb(row: SubQuestionResult) -> pb.SubQuestionResult:
    return pb.SubQuestionResult(
        sub_question=row.sub_question,
        modal_answer=row.modal_answer,
        agreement=row.agreement,
        soft_agreement=row.soft_agreement,
        path_answers=row.path_answers,
        answered=row.answered,
        echo=row.echo,
        echo_paths=row.echo_paths,
        from_path_values=row.from_path_values,
        path_answer_sources=[_SOURCE_TO_PB[source] for source in row.path_answer_sources],
        not_probed=not row.probed,
    )


def _usage_to_pb(phase: str, usage: PhaseUsage) -> pb.PhaseUsage:
    return pb.PhaseUsage(
        phase=phase,
        prompt_tokens=usage.prompt_tokens,
        generated_tokens=usage.generated_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        truncated_completions=usage.truncated,
    )


def _sampling_to_pb(report: SamplingReport | None) -> pb.Sampling | None:
    if report is None:
        return None
    return pb.Sampling(
        adaptive=report.adaptive,
        stop_reason=report.stop_reason.value,
        max_paths=report.max_paths,
        started=report.started,
        finished=report.finished,
        aborted=report.aborted,
        not_started=report.not_started,
        leader_probability=report.leader_probability,
        aborted_low_confidence=report.aborted_low_confidence,
        confidence_threshold=report.confidence_threshold,
    )


def result_to_response(result: GuardResult, return_paths_text: bool, arm: Arm | None = None) -> pb.GuardResponse:
    return pb.GuardResponse(
        arm=ARM_TO_PB[arm] if arm is not None else pb.ARM_UNSPECIFIED,
        request_id=result.request_id,
        decision=_DECISION_TO_PB[result.decision],
        answer=_answer(result.answer),
        confidence=result.confidence,
        abstain_reason=_REASON_TO_PB[result.abstain_reason],
        model=result.model,
        mode=MODE_TO_PB[result.mode],
        scorer=result.scorer,
        vote_share=result.vote_share,
        region=_REGION_TO_PB[result.region],
        ars_source=_ARS_TO_PB[result.ars_source],
        ars_error=result.ars_error,
        threshold=result.threshold,
        notes=result.notes,
        degraded_stages=result.degraded_stages,
        features=result.features,
        engine_wait_ms=result.engine_wait_ms,
        paths=[_path_to_pb(p, return_paths_text) for p in result.paths],
        sub_questions=[_sub_question_to_pb(row) for row in result.sub_questions],
        usage=[_usage_to_pb(phase, usage) for phase, usage in result.usage.items()],
        timings=[pb.StageTiming(stage=stage, duration_ms=ms) for stage, ms in result.timings_ms.items()],
        sampling=_sampling_to_pb(result.sampling),
    )


def _defaults_to_pb(config: GuardConfig) -> pb.Defaults:
    d = config.defaults
    return pb.Defaults(
        num_paths=d.num_paths,
        temperature=d.temperature,
        top_p=d.top_p,
        max_tokens=d.max_tokens,
        mode=MODE_TO_PB[d.mode],
        scorer=d.scorer,
        threshold=config.policy.threshold_for(d.scorer),
        score_mode=d.score_mode.value,
        adaptive=d.adaptive,
        min_paths=d.min_paths,
        stop_level=d.stop_level,
        parallel_paths=d.parallel_paths,
        confidence_abort=d.confidence_abort,
        confidence_warmup=d.confidence_warmup,
        confidence_keep=d.confidence_keep,
    )


def _limits_to_pb(lim: Limits, admission: Admission) -> pb.Limits:
    return pb.Limits(
        max_num_paths=lim.max_num_paths,
        max_tokens=lim.max_tokens,
        max_question_chars=lim.max_question_chars,
        max_sub_questions=lim.max_sub_questions,
        max_images=lim.max_images,
        max_image_bytes=lim.max_image_bytes,
        max_image_pixels=lim.max_image_pixels,
        max_concurrent_requests=admission.max_concurrent,
        max_queued_requests=admission.max_queued,
    )


def info_to_response(
    engine: Engine, config: GuardConfig, admission: Admission, splitter: ArmSplitter, *, shadow: bool
) -> pb.GetInfoResponse:
    """What GetInfo reports: the model, the request defaults and limits, the scorers, the A/B setup."""
    info = engine.info()
    return pb.GetInfoResponse(
        model=info.name,
        engine=info.engine,
        max_model_len=info.max_model_len,
        accepts_images=info.accepts_images,
        defaults=_defaults_to_pb(config),
        limits=_limits_to_pb(config.limits, admission),
        scorers=sorted(SCORERS),
        version=guard.__version__,
        ready=engine.ready,
        guard_fraction=splitter.guard_fraction,
        shadow=shadow,
    )


def event_to_pb(timed: Timed, return_paths_text: bool) -> pb.GuardEvent:
    """One streamed event of the pipeline (guard.events) as a GuardEvent."""
    e = timed.event
    out = pb.GuardEvent(elapsed_ms=timed.elapsed_ms)
    if isinstance(e, ProvisionalEvent):
        out.provisional.CopyFrom(pb.ProvisionalAnswer(
            answer=_answer(e.answer), path_index=e.path_index, text=e.text if return_paths_text else ""))
    elif isinstance(e, PathEvent):
        out.path.CopyFrom(pb.PathFinished(index=e.index, answer=_answer(e.answer), num_tokens=e.num_tokens,
                                          finish_reason=e.finish_reason or "", aborted=e.aborted))
    elif isinstance(e, ArsEvent):
        out.ars.CopyFrom(pb.SubQuestions(sub_questions=e.sub_questions, source=_ARS_TO_PB[e.source]))
    elif isinstance(e, ProgressEvent):
        out.progress.CopyFrom(pb.Progress(stage=e.stage.value, leader=_answer(e.leader), vote_share=e.vote_share,
                                          paths_finished=e.paths_finished, stop_reason=e.stop_reason))
    else:
        raise TypeError(f"not a guard event: {e!r}")
    return out


def decision_to_pb(response: pb.GuardResponse, retract: RetractReason | None, elapsed_ms: float) -> pb.GuardEvent:
    return pb.GuardEvent(elapsed_ms=elapsed_ms, decision=pb.DecisionEvent(
        response=response, retracted=retract is not None, retract_reason=retract.value if retract else ""))
