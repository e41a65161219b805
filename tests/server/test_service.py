"""The Guard service over a real gRPC channel: conversion, status codes, health, reflection, metrics."""

import asyncio
import struct
import urllib.request
import zlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from guard.errors import EngineError
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import scrape_metrics, start_server, stop_server


def stub(handle):
    return guard_pb2_grpc.GuardServiceStub(handle.channel)


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def test_guard_roundtrip(scripted_server):
    resp = await stub(scripted_server).Guard(
        pb.GuardRequest(question="Tom has 7 apples and buys 5. How many?", num_paths=4,
                        sub_questions=["How many at first?"], return_paths_text=True, request_id="abc")
    )
    assert resp.request_id == "abc"
    assert resp.decision == pb.DECISION_ACCEPT
    assert resp.answer.normalized == "12"
    assert resp.region == pb.REGION_RELIABLE
    assert resp.ars_source == pb.ARS_SOURCE_REQUEST
    assert len(resp.paths) == 4 and all("Answer: 12" in p.text for p in resp.paths)
    assert resp.sub_questions[0].modal_answer == "7"
    assert list(resp.sub_questions[0].path_answers) == ["7"] * 4
    assert {t.stage for t in resp.timings} >= {"sample", "probe", "total"}
    assert {u.phase for u in resp.usage} >= {"sample", "probe"}
    assert resp.model == "scripted" and resp.scorer == "trace"
    assert resp.features["vote_share"] == 1.0 and "ars_agreement" in resp.features


async def test_paths_text_only_when_asked(scripted_server):
    resp = await stub(scripted_server).Guard(pb.GuardRequest(question="q?", num_paths=2))
    assert all(p.text == "" for p in resp.paths)


async def test_raw_mode(scripted_server):
    resp = await stub(scripted_server).Guard(pb.GuardRequest(question="q?", mode=pb.MODE_RAW))
    assert resp.decision == pb.DECISION_RAW and resp.mode == pb.MODE_RAW
    assert len(resp.paths) == 1


@pytest.mark.parametrize(
    "request_kwargs, field",
    [
        ({"question": ""}, "question"),
        ({"question": "q?", "num_paths": 0}, "num_paths"),
        ({"question": "q?", "num_paths": 65}, "num_paths"),
        ({"question": "q?", "max_tokens": 0}, "max_tokens"),
        ({"question": "q?", "max_tokens": 100000}, "max_tokens"),
        ({"question": "q?", "temperature": -1.0}, "temperature"),
        ({"question": "q?", "temperature": float("nan")}, "temperature"),
        ({"question": "q?", "top_p": 0.0}, "top_p"),
        ({"question": "q?", "scorer": "bogus"}, "scorer"),
        ({"question": "q?", "mode": 7}, "mode"),
        ({"question": "q?", "sub_questions": [f"sub {i}?" for i in range(9)]}, "sub_questions"),
        ({"question": "q?", "images": [pb.Image(data=png_bytes(), mime_type="image/png")]}, "images"),
    ],
)
async def test_bad_input_is_invalid_argument_and_server_keeps_serving(scripted_server, request_kwargs, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(scripted_server).Guard(pb.GuardRequest(**request_kwargs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)
    ok = await stub(scripted_server).Guard(pb.GuardRequest(question="q?", num_paths=2))
    assert ok.decision == pb.DECISION_ACCEPT


async def test_image_errors_on_a_vision_model():
    handle = await start_server(ScriptedEngine(paths=[" Answer: 3"], accepts_images=True))
    try:
        s = stub(handle)
        cases = [
            (pb.Image(data=b"not an image", mime_type="image/png"), "images[0].data"),
            (pb.Image(data=png_bytes(), mime_type="image/tiff"), "images[0].mime_type"),
            (pb.Image(data=png_bytes(), mime_type="image/jpeg"), "images[0].mime_type"),
            (pb.Image(data=png_bytes(5000, 5000), mime_type="image/png"), "images[0].data"),
        ]
        for image, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.Guard(pb.GuardRequest(question="How many?", images=[image], scorer="majority"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert err.value.details().startswith(field)
        resp = await s.Guard(pb.GuardRequest(question="How many?", scorer="majority",
                                             images=[pb.Image(data=png_bytes(), mime_type="image/png")]))
        assert resp.answer.normalized == "3"
    finally:
        await stop_server(handle)


async def test_engine_failure_is_internal_and_unavailable_when_retryable():
    engine = ScriptedEngine(fail=EngineError("kaput"))
    handle = await start_server(engine)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(handle).Guard(pb.GuardRequest(question="q?"))
        assert err.value.code() == grpc.StatusCode.INTERNAL and "kaput" in err.value.details()
        engine.fail = EngineError("engine died", retryable=True)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(handle).Guard(pb.GuardRequest(question="q?"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await stop_server(handle)


async def test_deadline_exceeded_aborts_engine_work():
    engine = ScriptedEngine(delay_seconds=5)
    handle = await start_server(engine)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(handle).Guard(pb.GuardRequest(question="q?", request_id="slow"), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.3)
        assert engine.in_flight == 0
        assert "slow" in engine.aborted
    finally:
        await stop_server(handle)


async def test_backpressure_resource_exhausted():
    engine = ScriptedEngine(paths=[" Answer: 1"], delay_seconds=0.5)
    handle = await start_server(engine, max_concurrent_requests=1, max_queued_requests=1)
    try:
        s = stub(handle)
        calls = [asyncio.ensure_future(s.Guard(pb.GuardRequest(question="q?", scorer="majority"))) for _ in range(4)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        codes = [r.code() if isinstance(r, grpc.aio.AioRpcError) else grpc.StatusCode.OK for r in results]
        assert codes.count(grpc.StatusCode.OK) == 2
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2
    finally:
        await stop_server(handle)


async def test_health_not_serving_until_engine_ready():
    gate = asyncio.Event()

    class SlowStart(ScriptedEngine):
        async def start(self):
            await gate.wait()
            self.started = True

    engine = SlowStart(started=False)
    handle = await start_server(engine)
    try:
        health = health_pb2_grpc.HealthStub(handle.channel)
        resp = await health.Check(health_pb2.HealthCheckRequest(service="trace_guard.v1.GuardService"))
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(handle).Guard(pb.GuardRequest(question="q?"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        info = await stub(handle).GetInfo(pb.GetInfoRequest())
        assert info.ready is False
        gate.set()
        for _ in range(50):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.02)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        # The engine dying flips health back.
        engine.fail = EngineError("dead", retryable=True)
        for _ in range(50):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
            if resp.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.05)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await stop_server(handle)


async def test_get_info(scripted_server):
    info = await stub(scripted_server).GetInfo(pb.GetInfoRequest())
    assert info.model == "scripted" and info.ready
    assert info.defaults.num_paths == 8 and info.defaults.scorer == "trace"
    assert info.limits.max_num_paths == 64
    assert info.limits.max_concurrent_requests == 8
    assert set(info.scorers) == {"majority", "deepconf", "deepconf-low", "trace"}


async def test_reflection_lists_services(scripted_server):
    refl = reflection_pb2_grpc.ServerReflectionStub(scripted_server.channel)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for resp in refl.ServerReflectionInfo(requests()):
        names = {s.name for s in resp.list_services_response.service}
        break
    assert {"trace_guard.v1.GuardService", "grpc.health.v1.Health"} <= names


async def test_metrics_endpoint_moves(scripted_server):
    url = f"http://127.0.0.1:{scripted_server.server.metrics_port}/metrics"

    def scrape() -> str:
        return urllib.request.urlopen(url, timeout=5).read().decode()

    await stub(scripted_server).Guard(pb.GuardRequest(question="q?", num_paths=3))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub(scripted_server).Guard(pb.GuardRequest(question=""))
    await stub(scripted_server).Guard(pb.GuardRequest(question="q?", num_paths=8, adaptive=True, scorer="majority"))
    text = await asyncio.to_thread(scrape)
    assert 'trace_guard_decisions_total{arm="guard",decision="accept",reason=""} 2.0' in text
    # The adaptive request stopped after 4 of 8 paths (unanimous); the fixed one used its 3.
    assert 'trace_guard_sampling_stops_total{reason="settled"} 1.0' in text
    assert 'trace_guard_sampling_stops_total{reason="fixed"} 1.0' in text
    assert 'trace_guard_adaptive_paths_skipped_total{outcome="not_started"} 4.0' in text
    assert "trace_guard_paths_used_count 2.0" in text and "trace_guard_paths_used_sum 7.0" in text
    assert "trace_guard_sample_tokens_saved_total" in text
    assert 'trace_guard_errors_total{code="INVALID_ARGUMENT"} 1.0' in text
    assert "trace_guard_paths_total 7.0" in text
    assert 'trace_guard_request_duration_seconds_count{arm="guard",decision="accept",mode="guard"} 2.0' in text
    assert 'trace_guard_stage_duration_seconds_count{stage="probe"} 1.0' in text
    assert 'trace_guard_regions_total{region="reliable"} 2.0' in text
    assert 'trace_guard_ars_source_total{source="model"} 1.0' in text
    assert "trace_guard_requests_in_flight 0.0" in text
    assert "trace_guard_engine_ready 1.0" in text


async def test_truncated_completions_are_reported_and_counted():
    # Paths of 40 words at max_tokens 10 and probes longer than the probe limit: both are cut.
    from guard.pipeline import GuardConfig

    engine = ScriptedEngine(paths=[" " + "step " * 40 + "Answer: 7"], probe=lambda p, s: "3 + 4 = 7 " * 5,
                            honor_max_tokens=True)
    handle = await start_server(engine, GuardConfig(probe_max_tokens=6))
    try:
        resp = await stub(handle).Guard(pb.GuardRequest(question="q?", num_paths=3, max_tokens=10,
                                                        sub_questions=["s?"]))
        usage = {u.phase: u for u in resp.usage}
        # The three equal paths share one probe: one probe completion, cut.
        assert usage["sample"].truncated_completions == 3 and usage["probe"].truncated_completions == 1
        text = await scrape_metrics(handle)
        assert 'trace_guard_truncated_completions_total{phase="sample"} 3.0' in text
        assert 'trace_guard_truncated_completions_total{phase="probe"} 1.0' in text
    finally:
        await stop_server(handle)


async def test_echo_and_missing_probe_answers_are_reported_and_counted():
    # One sub-question every path answers with its own final answer (an echo), one that one path
    # cannot answer (missing, not disagreeing).
    def probe(path: str, sub: str) -> str:
        if sub == "What is the total?":
            return "12"
        return "" if "first" in path else "7"

    engine = ScriptedEngine(paths=[" first 7 + 5 = 12.\nAnswer: 12", " 7 + 5 = 12.\nAnswer: 12"], probe=probe)
    handle = await start_server(engine)
    try:
        resp = await stub(handle).Guard(pb.GuardRequest(
            question="q?", num_paths=4, sub_questions=["What is the total?", "How many at first?"]))
        echo, informative = resp.sub_questions
        assert echo.echo and echo.echo_paths == 4 and echo.answered == 4
        assert not informative.echo and informative.answered == 2 and informative.modal_answer == "7"
        assert resp.decision == pb.DECISION_ACCEPT and resp.region == pb.REGION_RELIABLE
        text = await scrape_metrics(handle)
        assert 'trace_guard_sub_questions_total{kind="echo"} 1.0' in text
        assert 'trace_guard_sub_questions_total{kind="informative"} 1.0' in text
        assert "trace_guard_probe_answers_missing_total 2.0" in text
    finally:
        await stop_server(handle)


async def test_a_sub_question_restating_the_question_is_reported_not_probed_and_counted():
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"], probe=lambda path, sub: "7")
    handle = await start_server(engine)
    try:
        resp = await stub(handle).Guard(pb.GuardRequest(
            question="Tom has 7 apples and buys 5. How many apples does Tom have?", num_paths=2,
            sub_questions=["How many at first?", "How many apples does Tom have?"]))
        asked, restated = resp.sub_questions
        assert not asked.not_probed and asked.answered == 2
        assert restated.not_probed and restated.echo and restated.answered == 0
        # Two equal paths, one asked sub-question: one probe.
        assert [kind for kind, _ in engine.calls].count("probe") == 1
        text = await scrape_metrics(handle)
        assert 'trace_guard_sub_questions_total{kind="restated"} 1.0' in text
        assert 'trace_guard_sub_questions_total{kind="informative"} 1.0' in text
        assert "trace_guard_probe_answers_missing_total 0.0" in text
    finally:
        await stop_server(handle)


@pytest.mark.parametrize("probe_format", ["legacy", "continue"])
async def test_probe_answer_sources_are_reported_and_counted(probe_format):
    """Each probe answer is told apart by where it comes from: the path's own final answer (an echo),
    another value the path wrote, or neither; the response and the metrics say how many of each."""
    from guard.pipeline import GuardConfig
    from guard.prompts import ProbeFormat

    sells_first = " He has 24 - 9 = 15 left after selling. Then 15 + 6 = 21 muffins.\nAnswer: 21"
    bakes_first = " He has 24 + 6 = 30 after baking. Then 30 - 9 = 21 muffins.\nAnswer: 21"

    def probe(path: str, sub: str) -> str:
        if sub == "How many are left after selling?":
            # The calculation's first equation is the value asked for (not the last one, 21).
            return "24 - 9 = 15, then 15 + 6 = 21" if "selling" in path else "21"
        return "9" if "selling" in path else "8"

    engine = ScriptedEngine(paths=[sells_first, bakes_first], probe=probe)
    handle = await start_server(engine, GuardConfig(probe_format=ProbeFormat(probe_format)))
    try:
        resp = await stub(handle).Guard(pb.GuardRequest(
            question="A baker makes 24 muffins, sells 9 and bakes 6. How many now?", num_paths=4,
            sub_questions=["How many are left after selling?", "How many did he sell?"]))
        left, sold = resp.sub_questions
        final, value, other = (pb.PROBE_ANSWER_SOURCE_FINAL_ANSWER, pb.PROBE_ANSWER_SOURCE_PATH_VALUE,
                               pb.PROBE_ANSWER_SOURCE_OTHER)
        assert list(left.path_answers) == ["15", "21", "15", "21"]
        assert list(left.path_answer_sources) == [value, final, value, final]
        assert left.echo_paths == 2 and left.from_path_values == 2
        assert list(sold.path_answers) == ["9", "8", "9", "8"]
        assert list(sold.path_answer_sources) == [value, other, value, other]
        assert sold.echo_paths == 0 and sold.from_path_values == 2
        assert list(resp.paths[0].path_values) == ["24", "9", "15", "6", "21"]
        assert list(resp.paths[1].path_values) == ["24", "6", "30", "9", "21"]
        text = await scrape_metrics(handle)
        assert 'trace_guard_probe_answers_total{source="final_answer"} 2.0' in text
        assert 'trace_guard_probe_answers_total{source="path_value"} 4.0' in text
        assert 'trace_guard_probe_answers_total{source="other"} 2.0' in text
    finally:
        await stop_server(handle)


async def test_adaptive_request_stops_early_and_says_so(scripted_server):
    resp = await stub(scripted_server).Guard(pb.GuardRequest(
        question="q?", num_paths=8, scorer="majority", adaptive=True, min_paths=3, seed=5,
    ))
    s = resp.sampling
    assert s.adaptive and s.stop_reason == "settled"
    assert (s.max_paths, s.started, s.finished, s.aborted, s.not_started) == (8, 4, 4, 0, 4)
    assert s.leader_probability == pytest.approx(31 / 32)
    assert len(resp.paths) == 4
    fixed = await stub(scripted_server).Guard(pb.GuardRequest(question="q?", num_paths=3, scorer="majority"))
    assert not fixed.sampling.adaptive and fixed.sampling.stop_reason == "fixed" and fixed.sampling.finished == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"min_paths": 0}, "min_paths"), ({"stop_level": 0.2}, "stop_level"), ({"parallel_paths": -1}, "parallel_paths"),
     ({"max_total_tokens": 10, "max_tokens": 64}, "max_total_tokens")],
)
async def test_adaptive_knobs_are_invalid_argument_naming_the_field(scripted_server, kwargs, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(scripted_server).Guard(pb.GuardRequest(question="q?", adaptive=True, **kwargs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


async def test_token_budget_over_grpc_drops_paths_and_says_so(scripted_server):
    resp = await stub(scripted_server).Guard(pb.GuardRequest(question="q?", num_paths=8, max_tokens=16,
                                                             max_total_tokens=40, scorer="majority"))
    assert len(resp.paths) == 2 and "sample" in resp.degraded_stages
    assert any("2 of 8 paths" in note for note in resp.notes)
    assert sum(u.generated_tokens for u in resp.usage) <= 40
