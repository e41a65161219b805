"""Reliability on the real engine: fuzzed requests, a client cancelling after one second, and the
engine-core process killed under the sidecar (health follows, requests get UNAVAILABLE, it recovers)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings

from benchmarks.sidecar import Sidecar
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.server.fuzz_strategies import CLEAR_CODES, FIELD_NAMES, guard_requests

REAL_EXAMPLES = int(os.environ.get("TRACE_GUARD_FUZZ_REAL_EXAMPLES", "150"))
QUESTION = "Tom has 7 apples and buys 5 more. How many apples does he have?"


def metric(sidecar, name: str) -> float:
    value = Sidecar(None, sidecar.address, sidecar.metrics_url).metric(name)
    assert value is not None, f"{name} not exported"
    return value


def wait_for(predicate, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until predicate() held, or None if it never did within timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def health(channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


outcomes: dict[str, int] = {}


@settings(max_examples=REAL_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=guard_requests(bounded=True))
def test_fuzzed_requests_on_the_real_engine(channel, req):
    try:
        resp = guard_pb2_grpc.GuardServiceStub(channel).Guard(req, timeout=120)
    except grpc.RpcError as err:
        outcomes[err.code().name] = outcomes.get(err.code().name, 0) + 1
        assert err.code() in CLEAR_CODES, f"{err.code().name}: {err.details()}"
        if err.code() is grpc.StatusCode.INVALID_ARGUMENT:
            assert err.details().split(":", 1)[0].split("[", 1)[0] in FIELD_NAMES, err.details()
        return
    outcomes["OK"] = outcomes.get("OK", 0) + 1
    assert resp.decision in (pb.DECISION_ACCEPT, pb.DECISION_ABSTAIN, pb.DECISION_RAW)
    assert len(resp.paths) >= 1


def test_real_server_still_answers_after_fuzzing(channel, sidecar):
    print(f"\nreal-engine fuzz outcomes: {outcomes}")
    resp = guard_pb2_grpc.GuardServiceStub(channel).Guard(
        pb.GuardRequest(question=QUESTION, num_paths=2, max_tokens=32, scorer="majority"), timeout=120
    )
    assert len(resp.paths) == 2
    assert sidecar.proc.poll() is None


@pytest.mark.parametrize("kind", ["fixed", "adaptive", "stream", "confidence_abort"])
def test_cancel_after_one_second_leaves_the_engine_idle(channel, sidecar, kind):
    """Fixed N (one engine request), adaptive (one per path), GuardStream and the confidence abort (one
    streamed engine request per path): cancelling the call aborts every engine request of it."""
    import threading

    stub = guard_pb2_grpc.GuardServiceStub(channel)
    # Long enough to still be generating after a second (8 paths x up to 1024 tokens on 2 cores).
    req = pb.GuardRequest(question="Write a long story about apples. " + QUESTION, num_paths=8, max_tokens=1024,
                          request_id=f"cancel-after-1s-{kind}", adaptive=kind == "adaptive",
                          confidence_abort=kind == "confidence_abort")
    if kind == "stream":
        call = stub.GuardStream(req, timeout=300)
        events: list = []
        reader = threading.Thread(target=lambda: events.extend(_drain(call)), daemon=True)
        reader.start()
    else:
        call = stub.Guard.future(req, timeout=300)
    assert wait_for(lambda: metric(sidecar, "trace_guard_engine_requests_running") > 0, timeout=10) is not None
    time.sleep(1.0)
    assert not call.done(), "the request finished before the cancel; make it longer"
    call.cancel()
    idle_after = wait_for(lambda: metric(sidecar, "trace_guard_engine_requests_running") == 0, timeout=10)
    print(f"\n{kind}: engine idle {idle_after}s after the cancel")
    assert idle_after is not None, "engine still running requests 10 s after the client cancelled"
    if kind == "stream":
        reader.join(10)
        assert events and events[-1] == "cancelled"
    else:
        with pytest.raises(grpc.FutureCancelledError):
            call.result()


def _drain(call) -> list:
    """Read a stream to its end; its last item says how it ended ("cancelled" for a cancel)."""
    seen = []
    try:
        for event in call:
            seen.append(event.WhichOneof("event"))
    except grpc.RpcError as err:
        seen.append("cancelled" if err.code() == grpc.StatusCode.CANCELLED else err.code().name)
    return seen


def _engine_core_pids(parent: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"EngineCore" in cmdline:
            pids.append(int(proc.name))
    return pids


def test_killed_engine_core_is_detected_and_restarted(channel, sidecar):
    cores = _engine_core_pids(sidecar.proc.pid)
    assert len(cores) == 1, f"expected one engine-core child of the sidecar, found {cores}"
    restarts_before = metric(sidecar, "trace_guard_engine_restarts_total")
    os.kill(cores[0], signal.SIGKILL)
    down = wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=30)
    assert down is not None, "health stayed SERVING after the engine core was killed"
    # While the engine is being rebuilt, a request gets a retryable status, not a hang.
    with pytest.raises(grpc.RpcError) as err:
        guard_pb2_grpc.GuardServiceStub(channel).Guard(pb.GuardRequest(question=QUESTION, num_paths=1), timeout=60)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    up = wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.SERVING, timeout=300, interval=0.5)
    assert up is not None, "engine did not come back:\n" + sidecar.log_tail()
    print(f"\nengine core killed: NOT_SERVING after {down:.1f}s, SERVING again after {down + up:.1f}s")
    assert metric(sidecar, "trace_guard_engine_restarts_total") == restarts_before + 1
    resp = guard_pb2_grpc.GuardServiceStub(channel).Guard(
        pb.GuardRequest(question=QUESTION, num_paths=2, max_tokens=32, scorer="majority"), timeout=120
    )
    assert len(resp.paths) == 2
    assert len(_engine_core_pids(sidecar.proc.pid)) == 1


def test_soak_smoke(sidecar, tmp_path):
    """The soak benchmark's short version: a few clients for a few seconds against the shared sidecar."""
    import json

    from benchmarks import soak

    assert soak.main(["--address", sidecar.address, "--metrics-url", sidecar.metrics_url, "--clients", "6",
                      "--duration", "4", "--max-tokens", "16", "--paths", "2", "--cancel-rounds", "1",
                      "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["completed_ok"] > 0
    assert set(result["status_counts"]) <= {"OK"} | {c.name for c in CLEAR_CODES}
    assert result["idle_after_load_s"] is not None
    assert result["cancel_idle_s"][0] is not None
    assert result["sidecar_alive"]
    assert (tmp_path / "soak.png").stat().st_size > 0
