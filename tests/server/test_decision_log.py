"""The decision log: rotation by size, flush on close, and no lost records across a graceful shutdown
under load (real gRPC server, scripted engine)."""

import asyncio
import json

import grpc

from server.decision_log import DecisionLog, log_files
from server.export_traces import ExportFilter, export_traces
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import start_server


def _all_records(path) -> list[dict]:
    return [json.loads(line) for f in log_files(path) for line in f.read_text().splitlines()]


def test_rotation_keeps_every_record_within_the_backups(tmp_path):
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=2000, backups=50)
    for i in range(300):
        assert log.submit({"request_id": f"r{i}", "pad": "x" * 50})
    log.close()
    files = log_files(path)
    assert len(files) > 5
    assert all(f.stat().st_size <= 2000 for f in files)
    # Oldest first across the rotated files, nothing lost or reordered.
    assert [r["request_id"] for r in _all_records(path)] == [f"r{i}" for i in range(300)]


def test_rotation_drops_only_files_past_the_backup_count(tmp_path):
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=1000, backups=2)
    for i in range(200):
        log.submit({"request_id": f"r{i}", "pad": "x" * 50})
    log.close()
    assert [f.name for f in log_files(path)] == ["d.jsonl.2", "d.jsonl.1", "d.jsonl"]
    ids = [r["request_id"] for r in _all_records(path)]
    assert ids == [f"r{i}" for i in range(200 - len(ids), 200)]  # the newest, in order


def test_full_queue_and_closed_log_refuse_and_count(tmp_path):
    log = DecisionLog(tmp_path / "d.jsonl", max_pending=1)
    accepted = sum(log.submit({"request_id": str(i)}) for i in range(2000))
    log.close()
    assert accepted + log.dropped == 2000
    assert log.written == accepted
    assert not log.submit({"request_id": "late"})


async def test_no_acknowledged_record_is_lost_across_graceful_shutdown_under_load(tmp_path):
    path = tmp_path / "decisions.jsonl"
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"], probe=lambda path, sub: "12", delay_seconds=0.01)
    handle = await start_server(engine, decision_log_path=str(path), decision_log_max_bytes=20_000,
                                decision_log_backups=1000, guard_fraction=0.5, max_concurrent_requests=8,
                                max_queued_requests=400)
    stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
    ok: list[str] = []
    failed: list[grpc.StatusCode] = []

    async def client(c: int) -> None:
        for i in range(1000):
            rid = f"c{c}-{i}"
            try:
                await stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=2, request_id=rid))
            except grpc.aio.AioRpcError as err:
                failed.append(err.code())
                return
            ok.append(rid)

    clients = [asyncio.create_task(client(c)) for c in range(24)]
    await asyncio.sleep(1.0)
    # SIGTERM path: drain with a grace period while clients keep sending.
    await handle.server.stop(grace=2.0)
    await asyncio.gather(*clients, return_exceptions=True)
    await handle.channel.close()
    logged = [r["request_id"] for r in _all_records(path)]
    assert len(ok) > 50
    assert failed, "the clients should have been cut off by the shutdown"
    assert set(ok) <= set(logged)
    assert len(logged) == len(set(logged))
    assert len(log_files(path)) > 1


async def test_export_traces_keeps_accepted_supported_paths(tmp_path):
    path = tmp_path / "decisions.jsonl"
    # Paths 0 and 1 agree on the answer and the sub-answer; path 2 answers differently.
    texts = [" 7 + 5 = 12.\nAnswer: 12", " 5 + 7 = 12.\nAnswer: 12", " 7 + 5 = 13.\nAnswer: 13"]
    engine = ScriptedEngine(paths=texts, probe=lambda path, sub: "13" if "13" in path else "12")
    handle = await start_server(engine, decision_log_path=str(path), guard_fraction=1.0)
    stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
    try:
        resp = await stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=3, request_id="acc",
                                                sub_questions=["What is 7 + 5?"]))
        raw = await stub.Guard(pb.GuardRequest(question="7 + 5?", mode=pb.MODE_RAW, request_id="raw"))
    finally:
        await handle.channel.close()
        await handle.server.stop(grace=1)
    assert raw.decision == pb.DECISION_RAW
    out = tmp_path / "traces.jsonl"
    regions = (pb.Region.Name(resp.region).removeprefix("REGION_").lower(),)
    stats = export_traces([path], out, ExportFilter(min_support=0.5, regions=regions))
    examples = [json.loads(line) for line in out.read_text().splitlines()]
    assert resp.decision == pb.DECISION_ACCEPT
    assert stats["records"] == 2 and stats["accepted"] == 1
    assert {e["reasoning"] for e in examples} == {texts[0].strip(), texts[1].strip()}
    assert all(e["answer_normalized"] == "12" and e["sub_answers"][0]["answer"] == "12" for e in examples)
    assert all(e["source"]["request_id"] == "acc" for e in examples)
    # A stricter filter (regions the request was not in) exports nothing.
    none = export_traces([path], tmp_path / "none.jsonl", ExportFilter(regions=("no_such_region",)))
    assert none["examples"] == 0
