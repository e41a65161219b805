"""Property-based fuzzing of the Guard RPC over a real gRPC server (scripted engine, so thousands of
requests run in seconds; tests/integration/test_fuzz_real.py sends a smaller share to the real engine).

Every request, however malformed or extreme, must get a well-formed response or a clear status
(never INTERNAL or UNKNOWN), and the server must answer a valid request afterwards.
"""

from __future__ import annotations

import asyncio
import os
import threading

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import start_server, stop_server
from tests.server.fuzz_strategies import CLEAR_CODES, FIELD_NAMES, guard_requests

EXAMPLES = int(os.environ.get("TRACE_GUARD_FUZZ_EXAMPLES", "2000"))
GUARD_METHOD = "/trace_guard.v1.GuardService/Guard"


class ThreadedServer:
    """The asyncio server on a loop of its own thread, so synchronous hypothesis tests can call it."""

    def __init__(self, engine):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handle = self._call(start_server(engine, max_concurrent_requests=4, max_queued_requests=4))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.handle.server.port}")
        self.stub = guard_pb2_grpc.GuardServiceStub(self.channel)
        self.raw = self.channel.unary_unary(GUARD_METHOD)  # bytes in, bytes out
        self.outcomes: dict[str, int] = {}

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self):
        self.channel.close()
        self._call(stop_server(self.handle))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


@pytest.fixture(scope="module")
def server():
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12", " Answer: 3"], probe=lambda path, sub: "7",
                            accepts_images=True)
    srv = ThreadedServer(engine)
    yield srv
    print(f"\nfuzz outcomes: {dict(sorted(srv.outcomes.items()))}")
    srv.close()


def check_valid_request_still_works(server: ThreadedServer) -> None:
    resp = server.stub.Guard(pb.GuardRequest(question="Tom has 7 apples and buys 5. How many?", num_paths=2),
                             timeout=10)
    assert resp.answer.normalized == "12"


def assert_well_formed(resp: pb.GuardResponse) -> None:
    assert resp.decision in (pb.DECISION_ACCEPT, pb.DECISION_ABSTAIN, pb.DECISION_RAW)
    assert 0.0 <= resp.confidence <= 1.0 and 0.0 <= resp.vote_share <= 1.0
    assert resp.request_id and resp.model == "scripted"
    assert any(t.stage == "total" for t in resp.timings)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=guard_requests())
def test_structured_requests_get_a_response_or_a_clear_status(server, req):
    try:
        resp = server.stub.Guard(req, timeout=10)
    except grpc.RpcError as err:
        code = err.code()
        server.count(code.name)
        assert code in CLEAR_CODES, f"{code.name}: {err.details()}"
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            assert err.details().split(":", 1)[0].split("[", 1)[0] in FIELD_NAMES, err.details()
        return
    server.count("OK")
    assert_well_formed(resp)


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_get_a_response_or_a_clear_status(server, data):
    try:
        out = server.raw(data, timeout=10)
    except grpc.RpcError as err:
        server.count(f"bytes:{err.code().name}")
        assert err.code() in CLEAR_CODES, f"{err.code().name}: {err.details()}"
        return
    server.count("bytes:OK")
    assert_well_formed(pb.GuardResponse.FromString(out))


def test_server_answers_after_the_fuzzing(server):
    check_valid_request_still_works(server)
    assert server.handle.server.admission.in_flight == 0
    assert server.handle.engine.in_flight == 0
