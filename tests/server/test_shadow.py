"""Shadow mode over a real channel: the caller gets the raw answer without waiting for the guard, the
decision log receives both outcomes, and excess shadow work is dropped and counted."""

import asyncio
import json

from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import scrape_metrics, start_server, stop_server


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_shadow_returns_raw_while_guard_runs_in_background(tmp_path):
    gate = asyncio.Event()
    # Only the guard probes; holding probes holds the shadow run while raw calls go through.
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"], probe=lambda path, sub: "12",
                            gate_on=frozenset({"probe"}), gate=gate)
    log = tmp_path / "decisions.jsonl"
    handle = await start_server(engine, guard_fraction=0.0, shadow=True, shadow_max_pending=1,
                                decision_log_path=str(log))
    try:
        stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
        first = await stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=3, request_id="r1",
                                                 sub_questions=["What is 7 + 5?"]))
        # Answered raw while its guarded run is still held in the probe stage.
        assert first.arm == pb.ARM_SHADOW and first.decision == pb.DECISION_RAW
        assert len(first.paths) == 1
        assert handle.server.shadow.pending == 1
        # The shadow queue (max 1) is full: the next request is still answered, its shadow run dropped.
        second = await stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=3, request_id="r2"))
        assert second.decision == pb.DECISION_RAW and second.arm == pb.ARM_SHADOW
        metrics = await scrape_metrics(handle)
        assert "trace_guard_shadow_dropped_total 1.0" in metrics
        assert "trace_guard_shadow_pending 1.0" in metrics
        gate.set()
        for _ in range(200):
            if handle.server.shadow.pending == 0:
                break
            await asyncio.sleep(0.02)
        assert handle.server.shadow.pending == 0
    finally:
        await stop_server(handle)
    records = {r["request_id"]: r for r in _records(log)}
    assert set(records) == {"r1", "r2"}
    done, dropped = records["r1"], records["r2"]
    assert done["arm"] == "shadow" and done["shadow_status"] == "done"
    assert done["raw"]["decision"] == "raw" and done["raw"]["answer_normalized"] == "12"
    assert done["guarded"]["decision"] == "accept" and len(done["guarded"]["paths"]) == 3
    assert done["guarded"]["ars"][0]["sub_question"] == "What is 7 + 5?"
    assert done["guarded"]["timings_ms"]["total"] > 0
    assert dropped["shadow_status"] == "dropped" and dropped["guarded"] is None and dropped["raw"] is not None


async def test_shadow_metrics_carry_the_shadow_arm(tmp_path):
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"], probe=lambda path, sub: "12")
    handle = await start_server(engine, guard_fraction=0.0, shadow=True)
    try:
        stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
        await stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=2))
        for _ in range(200):
            if handle.server.shadow.pending == 0:
                break
            await asyncio.sleep(0.02)
        text = await scrape_metrics(handle)
    finally:
        await stop_server(handle)
    # The caller-facing raw answer and the background guard both count under arm="shadow".
    assert 'trace_guard_request_duration_seconds_count{arm="shadow",decision="raw",mode="raw"} 1.0' in text
    assert 'trace_guard_decisions_total{arm="shadow",decision="accept",reason=""} 1.0' in text
    assert 'trace_guard_shadow_runs_total{status="done"} 1.0' in text


async def test_shutdown_cancels_unfinished_shadow_work_and_logs_it(tmp_path):
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"], probe=lambda path, sub: "12",
                            hang_on=frozenset({"probe"}))
    log = tmp_path / "decisions.jsonl"
    handle = await start_server(engine, guard_fraction=0.0, shadow=True, decision_log_path=str(log))
    stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
    resp = await stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=2, request_id="stuck"))
    assert resp.decision == pb.DECISION_RAW
    await handle.channel.close()
    await handle.server.stop(grace=0.2)
    (record,) = _records(log)
    assert record["request_id"] == "stuck" and record["shadow_status"] == "cancelled"
    assert any(rid.startswith("stuck:shadow") for rid in engine.aborted)
