"""Request text stays out of the logs unless the operator turns it on."""

import contextlib
import logging

from guard.pipeline import GuardConfig
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import start_server, stop_server

MARKER = "Zanzibar-4711"


async def _ask_and_capture(caplog, log_request_text: bool) -> str:
    engine = ScriptedEngine(paths=[f" {MARKER} 12.\nAnswer: 12"], probe=lambda path, sub: MARKER)
    handle = await start_server(engine, GuardConfig(log_request_text=log_request_text))
    caplog.clear()
    try:
        with caplog.at_level(logging.DEBUG):
            stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
            await stub.Guard(pb.GuardRequest(question=f"How many {MARKER}s?", num_paths=2, request_id="log-1",
                                             sub_questions=[f"What is {MARKER}?"]))
            # A rejected request must not leak its text either.
            with contextlib.suppress(Exception):
                await stub.Guard(pb.GuardRequest(question=f"{MARKER}?", num_paths=999))
    finally:
        await stop_server(handle)
    return caplog.text


async def test_logs_carry_no_request_text_by_default(caplog):
    text = await _ask_and_capture(caplog, log_request_text=False)
    assert "log-1" in text and "decision=accept" in text  # the request was logged...
    assert MARKER not in text  # ...without its question, sub-questions, paths or answer


async def test_request_text_is_logged_when_enabled(caplog):
    text = await _ask_and_capture(caplog, log_request_text=True)
    assert f"How many {MARKER}s?" in text
