"""Fault injection over a real gRPC channel: the engine raises mid-request, hangs past the deadline,
dies and comes back; the client cancels. Status codes, no stuck requests, health following the engine."""

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guard.errors import EngineError
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import start_server, stop_server

GOOD = " 7 + 5 = 12.\nAnswer: 12"
# Scored (contested), so a request goes through every kind of engine call: sample, probe and score.
REQUEST = pb.GuardRequest(question="Tom has 7 apples and buys 5. How many?", num_paths=3,
                          sub_questions=["How many at first?"], score_mode="contested")


def split_probe(path: str, sub: str) -> str:
    return "7" if "12" in path else "3"


async def eventually(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


async def health_status(handle) -> int:
    stub = health_pb2_grpc.HealthStub(handle.channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=""))).status


@pytest.fixture
async def faulty():
    engine = ScriptedEngine(paths=[GOOD, " 1 + 2 = 3\nAnswer: 3"], probe=split_probe)
    handle = await start_server(engine)
    yield handle
    await stop_server(handle)


@pytest.mark.parametrize(
    "kind,retryable,code",
    [
        ("probe", False, grpc.StatusCode.INTERNAL),
        ("score", True, grpc.StatusCode.UNAVAILABLE),
        ("sample", True, grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_engine_raising_mid_request_gives_a_status_and_the_server_recovers(faulty, kind, retryable, code):
    engine = faulty.engine
    engine.fail, engine.fail_on = EngineError(f"injected {kind} failure", retryable=retryable), frozenset({kind})
    stub = guard_pb2_grpc.GuardServiceStub(faulty.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Guard(REQUEST, timeout=10)
    assert err.value.code() is code
    assert f"injected {kind} failure" in err.value.details()
    assert await eventually(lambda: engine.in_flight == 0)
    engine.fail = None
    resp = await stub.Guard(REQUEST, timeout=10)
    assert resp.answer.normalized == "12"


@pytest.mark.parametrize("kind", ["sample", "probe", "score"])
async def test_engine_hanging_past_the_deadline_is_aborted(faulty, kind):
    engine = faulty.engine
    engine.hang_on = frozenset({kind})
    stub = guard_pb2_grpc.GuardServiceStub(faulty.channel)
    req = pb.GuardRequest()
    req.CopyFrom(REQUEST)
    req.request_id = f"hang-{kind}"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Guard(req, timeout=0.5)
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # Every engine request of the call is gone: the hung one was cancelled and abort() was called.
    assert await eventually(lambda: engine.in_flight == 0)
    assert await eventually(lambda: f"hang-{kind}" in engine.aborted)
    assert faulty.server.admission.in_flight == 0
    engine.hang_on = frozenset()
    assert (await stub.Guard(REQUEST, timeout=10)).answer.normalized == "12"


async def test_client_cancel_leaves_the_engine_idle(faulty):
    engine = faulty.engine
    engine.kind_delay = {"sample": 30.0}
    stub = guard_pb2_grpc.GuardServiceStub(faulty.channel)
    req = pb.GuardRequest(question="q?", num_paths=2, request_id="cancel-me")
    call = stub.Guard(req, timeout=60)
    assert await eventually(lambda: engine.in_flight > 0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await eventually(lambda: engine.in_flight == 0)
    assert await eventually(lambda: "cancel-me" in engine.aborted)
    # The scrape-time gauge sees the same idle engine.
    assert faulty.metrics.registry.get_sample_value("trace_guard_engine_requests_running") == 0


async def test_dead_engine_turns_health_off_answers_unavailable_and_is_restarted():
    engine = ScriptedEngine(paths=[GOOD], probe=split_probe)
    handle = await start_server(engine)
    try:
        stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
        assert await eventually(lambda: handle.metrics.registry.get_sample_value("trace_guard_engine_ready") == 1)
        # Keep the engine dead until the restart below, so the dead window is observable.
        restarted = asyncio.Event()

        async def slow_restart():
            await restarted.wait()
            engine.dead = False
            engine.restarts += 1

        engine.restart = slow_restart
        engine.dead = True
        assert await eventually(
            lambda: handle.metrics.registry.get_sample_value("trace_guard_engine_ready") == 0
        )
        assert await health_status(handle) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Guard(REQUEST, timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        restarted.set()
        assert await eventually(lambda: engine.restarts == 1)
        assert await eventually(
            lambda: handle.metrics.registry.get_sample_value("trace_guard_engine_ready") == 1
        )
        assert await health_status(handle) == health_pb2.HealthCheckResponse.SERVING
        assert (await stub.Guard(REQUEST, timeout=5)).answer.normalized == "12"
        assert handle.metrics.registry.get_sample_value("trace_guard_engine_restarts_total") == 1
    finally:
        await stop_server(handle)


async def test_engine_that_stays_dead_stops_the_server_after_its_restarts():
    engine = ScriptedEngine(paths=[GOOD])

    async def failing_restart():
        engine.restarts += 1
        raise EngineError("cannot rebuild", retryable=True)

    engine.restart = failing_restart
    handle = await start_server(engine, max_engine_restarts=2)
    try:
        engine.dead = True
        assert await eventually(lambda: handle.server._stopped.is_set(), timeout=10)
        assert engine.restarts == 2
        assert handle.server.engine_failed is not None
    finally:
        await stop_server(handle)


async def test_engine_failure_in_one_request_does_not_touch_concurrent_ones(faulty):
    engine = faulty.engine
    engine.kind_delay = {"sample": 0.2}
    stub = guard_pb2_grpc.GuardServiceStub(faulty.channel)
    good = [stub.Guard(REQUEST, timeout=10) for _ in range(4)]
    await asyncio.sleep(0.05)
    engine.fail, engine.fail_on = EngineError("injected", retryable=False), frozenset({"ars"})
    bad = stub.Guard(pb.GuardRequest(question="Different question, model ARS?", num_paths=2), timeout=10)
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(r.answer.normalized == "12" for r in results[:4])
    # A failed ARS generation is not fatal: the guard falls back to answer-only consistency.
    assert results[4].ars_source == pb.ARS_SOURCE_NONE and "injected" in results[4].ars_error
