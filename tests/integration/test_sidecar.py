"""The real sidecar on the real vLLM engine (default model) over a real channel: guard, raw, bad input, metrics, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import grpc
import pytest

from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc

QUESTION = "Tom has 7 apples and buys 5 more. How many apples does he have?"


def stub(channel):
    return guard_pb2_grpc.GuardServiceStub(channel)


def test_get_info_describes_the_real_engine(channel, sidecar):
    info = stub(channel).GetInfo(pb.GetInfoRequest(), timeout=10)
    assert info.ready
    assert info.engine == "vllm-inprocess"
    assert info.model == os.path.basename(sidecar.model.rstrip("/"))
    assert info.max_model_len >= 1024
    assert info.accepts_images is False


def test_guarded_request_with_request_ars(channel):
    resp = stub(channel).Guard(
        pb.GuardRequest(
            question=QUESTION, num_paths=8, seed=1, return_paths_text=True,
            sub_questions=["How many apples does Tom have at first?", "How many apples does he buy?"],
        ),
        timeout=300,
    )
    assert resp.decision in (pb.DECISION_ACCEPT, pb.DECISION_ABSTAIN)
    assert len(resp.paths) == 8
    assert all(p.num_tokens > 0 and p.text for p in resp.paths)
    assert resp.ars_source == pb.ARS_SOURCE_REQUEST
    assert len(resp.sub_questions) == 2
    assert all(len(row.path_answers) == 8 for row in resp.sub_questions)
    assert all(0.0 <= row.agreement <= 1.0 for row in resp.sub_questions)
    assert resp.region != pb.REGION_UNSPECIFIED
    usage = {u.phase: u for u in resp.usage}
    assert usage["sample"].generated_tokens == sum(p.num_tokens for p in resp.paths)
    assert usage["probe"].generated_tokens > 0
    timings = {t.stage: t.duration_ms for t in resp.timings}
    assert timings["total"] >= timings["sample"] > 0
    # The few-shot prompt makes the answer extractable on most paths.
    assert sum(p.HasField("answer") for p in resp.paths) >= 4
    if resp.decision == pb.DECISION_ACCEPT:
        assert resp.confidence >= resp.threshold


def test_model_generated_ars_then_cache_hit(channel):
    question = "A box holds 4 pens. Lisa buys 3 boxes and loses 2 pens. How many pens does she have?"
    # Scored (contested, not the default hard), so the real engine runs every stage.
    request = pb.GuardRequest(question=question, num_paths=4, max_tokens=64, score_mode="contested")
    first = stub(channel).Guard(request, timeout=300)
    # Structured output makes ARS generation succeed on the real engine; validation may still drop items.
    assert first.ars_source in (pb.ARS_SOURCE_MODEL, pb.ARS_SOURCE_NONE)
    if first.ars_source == pb.ARS_SOURCE_NONE:
        pytest.fail(f"model-generated ARS failed: {first.ars_error}")
    assert 1 <= len(first.sub_questions) <= 8
    assert {t.stage for t in first.timings} >= {"ars", "probe", "score"}
    second = stub(channel).Guard(request, timeout=300)
    assert second.ars_source == pb.ARS_SOURCE_CACHE
    assert [r.sub_question for r in second.sub_questions] == [r.sub_question for r in first.sub_questions]


def test_raw_request(channel):
    resp = stub(channel).Guard(pb.GuardRequest(question=QUESTION, mode=pb.MODE_RAW, seed=3), timeout=300)
    assert resp.decision == pb.DECISION_RAW
    assert len(resp.paths) == 1
    assert resp.paths[0].num_tokens > 0


@pytest.mark.parametrize(
    "kwargs, field",
    [({"question": ""}, "question"), ({"question": "q?", "num_paths": 100}, "num_paths"),
     ({"question": "q?", "images": [pb.Image(data=b"\x89PNG", mime_type="image/png")]}, "images")],
)
def test_bad_request_then_server_keeps_serving(channel, kwargs, field):
    with pytest.raises(grpc.RpcError) as err:
        stub(channel).Guard(pb.GuardRequest(**kwargs), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)
    ok = stub(channel).Guard(pb.GuardRequest(question=QUESTION, mode=pb.MODE_RAW, max_tokens=8), timeout=120)
    assert ok.decision == pb.DECISION_RAW


def test_metrics_endpoint_shows_counters(channel, sidecar):
    def scrape() -> dict[str, float]:
        text = urllib.request.urlopen(sidecar.metrics_url, timeout=10).read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("trace_guard_")
        }

    before = scrape()
    stub(channel).Guard(pb.GuardRequest(question=QUESTION, num_paths=2, max_tokens=48, scorer="majority"), timeout=300)
    after = scrape()
    assert after["trace_guard_paths_total"] == before.get("trace_guard_paths_total", 0) + 2
    key = 'trace_guard_tokens_total{kind="generated",phase="sample"}'
    assert after[key] > before.get(key, 0)
    assert after["trace_guard_engine_ready"] == 1.0
    assert sum(v for k, v in after.items() if k.startswith("trace_guard_decisions_total")) > sum(
        v for k, v in before.items() if k.startswith("trace_guard_decisions_total")
    )


def test_cli_ask_prints_a_decision(sidecar):
    out = subprocess.run(
        [sys.executable, "-m", "server", "ask", QUESTION, "--address", sidecar.address, "--paths", "4",
         "--max-tokens", "64", "--sub-question", "How many apples does Tom have at first?"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.split()[0] in ("ACCEPT", "ABSTAIN")
    assert "Auxiliary Reasoning Set:" in out.stdout
    assert out.stdout.count("\n") > 8


def test_concurrent_seeded_requests_keep_the_engine_alive(channel):
    """vLLM 0.32 on CPU crashed the engine when seeded requests were prefilled in chunks."""
    from concurrent.futures import ThreadPoolExecutor

    questions = [f"A shop has {a} boxes with {b} pens in each box. How many pens does it have?"
                 for a, b in [(3, 4), (5, 6), (7, 2), (9, 3), (4, 8), (6, 6)]]

    def ask(i_q):
        i, q = i_q
        return stub(channel).Guard(
            pb.GuardRequest(question=q, num_paths=8, max_tokens=32, seed=i, scorer="majority"), timeout=300
        )

    with ThreadPoolExecutor(len(questions)) as pool:
        responses = list(pool.map(ask, enumerate(questions)))
    assert all(len(r.paths) == 8 for r in responses)
    info = stub(channel).GetInfo(pb.GetInfoRequest(), timeout=10)
    assert info.ready


def test_latency_benchmark_smoke(sidecar, tmp_path):
    """benchmarks/latency.py end to end on a couple of requests, so it keeps working."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.latency", "--address", sidecar.address, "--num-requests", "2",
         "--max-tokens", "16", "--paths", "2", "--scorer", "trace", "--stream", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    results = json.loads((tmp_path / "latency.json").read_text())
    assert set(results) == {"raw@c1", "guard-trace-n2@c1", "stream-trace-n2@c1"}
    assert results["guard-trace-n2@c1"]["p50_s"] > 0
    stream = results["stream-trace-n2@c1"]
    # At 16 tokens the small model may give no answer at all (then no provisional answer was sent: nan).
    assert stream["provisional_p50_s"] != stream["provisional_p50_s"] or 0 < stream["provisional_p50_s"] <= stream["p50_s"]
    assert (tmp_path / "latency_cdf.png").stat().st_size > 1000


def test_get_info_answers_while_the_engine_loads(tmp_path):
    """GetInfo and health answer at once; Guard says UNAVAILABLE until the engine is ready."""
    import json as _json
    import signal
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", "0", "--metrics-port", "-1", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = f"127.0.0.1:{_json.loads(port_file.read_text())['port']}"
        with grpc.insecure_channel(address) as ch:
            info = stub(ch).GetInfo(pb.GetInfoRequest(), timeout=10)
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert info.model and not info.ready
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as err:
                stub(ch).Guard(pb.GuardRequest(question=QUESTION), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0


def test_adaptive_request_stops_early_by_the_engines_own_count(channel, sidecar):
    """Greedy paths all agree, so adaptive sampling stops at min_paths: the engine itself finished 4 path
    requests for it, not 8."""

    def engine_counters() -> dict[str, float]:
        text = urllib.request.urlopen(sidecar.metrics_url, timeout=10).read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("trace_guard_engine_")}

    before = engine_counters()
    resp = stub(channel).Guard(pb.GuardRequest(
        question=QUESTION, num_paths=8, max_tokens=96, temperature=0.0, scorer="majority",
        adaptive=True, min_paths=4, parallel_paths=4,
    ), timeout=300)
    after = engine_counters()
    s = resp.sampling
    assert s.adaptive and s.stop_reason == "settled" and (s.started, s.finished, s.not_started) == (4, 4, 4)
    assert len(resp.paths) == 4
    finished = "trace_guard_engine_finished_requests_total"
    assert after[finished] - before[finished] == 4
    generated = "trace_guard_engine_generation_tokens_total"
    assert after[generated] - before[generated] == sum(p.num_tokens for p in resp.paths)


def test_guard_stream_decision_equals_guard_on_the_real_engine(channel):
    """GuardStream samples each path as its own engine request (seed + i, as vLLM seeds the children of an
    n=N request): its decision is what Guard returns for the same request, timings and token accounting
    aside."""
    request = pb.GuardRequest(question=QUESTION, num_paths=3, max_tokens=64, seed=11, scorer="majority",
                              return_paths_text=True, request_id="stream-vs-guard")
    events = list(stub(channel).GuardStream(request, timeout=300))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "decision" and kinds.count("path") == 3
    if any(e.path.HasField("answer") for e in events if e.HasField("path")):
        assert kinds.count("provisional") == 1 and kinds.index("provisional") < kinds.index("decision")
    guard = stub(channel).Guard(request, timeout=300)

    def comparable(resp):
        out = pb.GuardResponse()
        out.CopyFrom(resp)
        for name in ("timings", "usage", "engine_wait_ms"):
            out.ClearField(name)
        return out

    assert comparable(events[-1].decision.response) == comparable(guard)
