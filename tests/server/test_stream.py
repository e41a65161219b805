"""GuardStream over a real gRPC channel: event order, the decision equals Guard's, errors, cancel, metrics."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import scrape_metrics, start_server, stop_server


def stub(handle):
    return guard_pb2_grpc.GuardServiceStub(handle.channel)


async def collect(call) -> list[pb.GuardEvent]:
    return [event async for event in call]


def comparable(resp: pb.GuardResponse) -> pb.GuardResponse:
    """What must match between Guard and GuardStream: all but wall times and token accounting (streamed
    paths are one engine request each, so each reports its own, mostly cached, prompt)."""
    out = pb.GuardResponse()
    out.CopyFrom(resp)
    for name in ("timings", "usage", "engine_wait_ms"):
        out.ClearField(name)
    return out


async def test_stream_events_then_a_decision_equal_to_guard(scripted_server):
    request = pb.GuardRequest(question="Tom has 7 apples and buys 5. How many?", num_paths=4, seed=7,
                              sub_questions=["How many at first?"], return_paths_text=True, request_id="s1")
    events = await collect(stub(scripted_server).GuardStream(request))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "decision" and kinds.count("decision") == 1
    assert kinds.count("provisional") == 1 and kinds.count("path") == 4 and kinds.count("ars") == 1
    assert kinds.index("provisional") < kinds.index("path")
    provisional = events[kinds.index("provisional")].provisional
    assert provisional.answer.normalized == "12" and "Answer: 12" in provisional.text
    assert [e.progress.stage for e in events if e.HasField("progress")][-2:] == ["probe", "decide"]
    assert [e.elapsed_ms for e in events] == sorted(e.elapsed_ms for e in events)
    decision = events[-1].decision
    assert not decision.retracted and decision.retract_reason == ""
    guard = await stub(scripted_server).Guard(request)
    assert comparable(decision.response) == comparable(guard)


async def test_stream_retracts_a_provisional_answer_the_guard_does_not_back():
    engine = ScriptedEngine(paths=[" Answer: 5", *[" so four and three is seven then twelve. Answer: 12"] * 3],
                            word_seconds=0.02)
    handle = await start_server(engine)
    try:
        events = await collect(stub(handle).GuardStream(pb.GuardRequest(question="q?", num_paths=4, scorer="majority")))
        assert events[0].provisional.answer.normalized == "5"
        decision = events[-1].decision
        assert decision.retracted and decision.retract_reason == "changed"
        assert decision.response.answer.normalized == "12"
        text = await scrape_metrics(handle)
        assert 'trace_guard_stream_decisions_total{outcome="retract",reason="changed"} 1.0' in text
        assert "trace_guard_stream_provisional_seconds_count 1.0" in text
        assert "trace_guard_stream_decision_seconds_count 1.0" in text
    finally:
        await stop_server(handle)


async def test_stream_bad_request_is_invalid_argument_naming_the_field(scripted_server):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub(scripted_server).GuardStream(pb.GuardRequest(question="q?", num_paths=0)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("num_paths")
    # The server keeps serving.
    events = await collect(stub(scripted_server).GuardStream(pb.GuardRequest(question="q?", num_paths=2)))
    assert events[-1].decision.response.answer.normalized == "12"


async def test_cancelling_the_stream_aborts_the_engine_work():
    engine = ScriptedEngine(paths=[" Answer: 3"], hang_on=frozenset({"probe"}))
    handle = await start_server(engine)
    try:
        call = stub(handle).GuardStream(pb.GuardRequest(question="q?", num_paths=3, sub_questions=["How many?"],
                                                        request_id="cancel-me"))
        seen = []
        async for event in call:
            seen.append(event.WhichOneof("event"))
            if seen.count("path") == 3:
                break
        call.cancel()
        for _ in range(50):
            if engine.in_flight == 0 and "cancel-me" in engine.aborted:
                break
            await asyncio.sleep(0.05)
        assert engine.in_flight == 0 and "cancel-me" in engine.aborted
        assert seen[0] in ("ars", "provisional") and "provisional" in seen
    finally:
        await stop_server(handle)


async def test_stream_deadline_is_deadline_exceeded():
    engine = ScriptedEngine(paths=[" Answer: 3"], hang_on=frozenset({"probe"}))
    handle = await start_server(engine)
    try:
        call = stub(handle).GuardStream(pb.GuardRequest(question="q?", num_paths=2, sub_questions=["How many?"],
                                                        request_id="late"), timeout=0.5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(call)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.3)
        assert engine.in_flight == 0
    finally:
        await stop_server(handle)


async def test_raw_mode_stream_commits_its_one_answer(scripted_server):
    events = await collect(stub(scripted_server).GuardStream(pb.GuardRequest(question="q?", mode=pb.MODE_RAW)))
    assert [e.WhichOneof("event") for e in events] == ["provisional", "path", "decision"]
    assert not events[-1].decision.retracted and events[-1].decision.response.decision == pb.DECISION_RAW


async def test_confidence_abort_over_grpc_reports_aborted_paths_events_and_metric():
    from tests.scripted_engine import UNSURE_WORD

    sure = " ".join(["step"] * 20) + " Answer: 12"
    unsure = " ".join(["step"] + [UNSURE_WORD] * 39) + " Answer: 9"
    engine = ScriptedEngine(paths=[sure] * 4 + [unsure] * 2, word_seconds=0.002)
    handle = await start_server(engine)
    try:
        request = pb.GuardRequest(question="q?", num_paths=6, scorer="majority", confidence_abort=True,
                                  confidence_warmup=4)
        events = await collect(stub(handle).GuardStream(request))
        aborted = [e.path for e in events if e.HasField("path") and e.path.aborted]
        assert sorted(p.index for p in aborted) == [4, 5]
        assert all(p.finish_reason == "low_confidence" and not p.HasField("answer") for p in aborted)
        s = events[-1].decision.response.sampling
        assert s.aborted_low_confidence == 2 and s.finished == 4 and s.confidence_threshold == pytest.approx(1.55)
        assert events[-1].decision.response.answer.normalized == "12"
        text = await scrape_metrics(handle)
        assert "trace_guard_paths_aborted_low_confidence_total 2.0" in text
        # All six started together, so the aborted paths had as many tokens as the warm-up's longest by the
        # time the threshold was set: nothing saved against fixed N (the estimate never goes negative).
        assert "trace_guard_sample_tokens_saved_total 0.0" in text
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(handle).Guard(pb.GuardRequest(question="q?", confidence_abort=True, confidence_keep=0.0))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("confidence_keep")
    finally:
        await stop_server(handle)
