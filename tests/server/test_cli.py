"""The trace-guard command: calibrate on recorded samples, and the readable rendering of a response."""

import asyncio
import json

import pytest

from guard import replay
from guard.params import GuardParams
from guard.pipeline import GuardConfig, GuardPipeline
from guard.policy import Policy
from server.cli import build_parser, format_response, guard_config, main
from server.convert import result_to_response
from tests.scripted_engine import ScriptedEngine


async def _records(n_good: int, n_bad: int) -> list[replay.Record]:
    out = []
    unanimous = ScriptedEngine(paths=[" 3 + 4 = 7.\nAnswer: 7"], probe=lambda p, s: "7")
    # Each path works with its own value before its answer line: the probe reads that value.
    split_vote = ScriptedEngine(paths=[" Take 7.\nAnswer: 7", " Take 8.\nAnswer: 8", " Take 9.\nAnswer: 9"],
                                probe=lambda p, s: p.split("Take ")[1][0])
    for i in range(n_good):
        r = await GuardPipeline(unanimous).run(GuardParams(question="q?", num_paths=3, sub_questions=("s?",)))
        out.append(replay.Record.from_result(f"good{i}", "7", [], r))
    for i in range(n_bad):
        r = await GuardPipeline(split_vote).run(GuardParams(question="q?", num_paths=3, sub_questions=("s?",)))
        out.append(replay.Record.from_result(f"bad{i}", "9", [], r))  # the split vote picks 7: wrong
    return out


async def test_calibrate_writes_a_policy_that_serve_can_load(tmp_path, capsys):
    data = tmp_path / "records.jsonl"
    replay.save(await _records(60, 60), data)
    out = tmp_path / "policy.json"
    assert main(["calibrate", "--data", str(data), "--target-risk", "0.1", "--delta", "0.1", "--out", str(out),
                 "--splits", "5"]) == 0
    summary = json.loads(out.read_text())["calibration"]
    assert summary["resplits"]["splits"] == 5 and summary["resplits"]["within_target"] == 1.0
    assert summary["resplits"]["certified_and_met"] == 5 and summary["resplits"]["nothing_certified"] == 0
    policy = Policy.load(out)
    # Unanimous items have confidence 1, split ones 1/3: the fitted threshold separates them.
    assert summary["feasible"] and 1 / 3 < policy.threshold_for("trace") <= 1.0
    assert summary["held_out_risk"] == 0.0 and 0.3 < summary["held_out_coverage"] < 0.7
    assert "policy written" in capsys.readouterr().out


async def test_format_response_shows_decision_ars_and_ffs():
    paths = [" 4 + 3 = 7, 7 + 5 = 12.\nAnswer: 12"] * 2 + [" 4 + 2 = 6, 6 + 5 = 11.\nAnswer: 11"]
    engine = ScriptedEngine(paths=paths, probe=lambda p, s: p.split("= ")[1].split(",")[0])
    result = await GuardPipeline(engine).run(GuardParams(question="q?", num_paths=3,
                                                         sub_questions=("How many after the first step?",)))
    text = format_response(result_to_response(result, return_paths_text=False))
    first = text.splitlines()[0]
    assert first.split()[0] in ("ACCEPT", "ABSTAIN") and "answer=12" in first
    assert "Auxiliary Reasoning Set:" in text and "How many after the first step?" in text
    assert "region=" in text and "timings (ms):" in text and "answered 3/3" in text
    # Path 2 answered 6 against a 2/3 mode of 7: its FFS is 1.
    assert any(line.split()[:2] == ["2", "11"] and line.split()[4] == "1" for line in text.splitlines())


async def test_format_response_marks_echo_sub_questions():
    # Each path's working ends with its own total, which the probe reads back.
    engine = ScriptedEngine(paths=[" So 12.\nAnswer: 12", " So 12.\nAnswer: 12", " So 11.\nAnswer: 11"],
                            probe=lambda p, s: p.split()[-1].rstrip("."))
    result = await GuardPipeline(engine).run(GuardParams(question="q?", num_paths=3, sub_questions=("What total?",)))
    text = format_response(result_to_response(result, return_paths_text=False))
    # Every path answers the sub-question with its own final answer: an echo, no FFS.
    assert "ECHO (not counted)" in text
    assert not any(line.split()[:2] == ["2", "11"] and line.split()[4] == "1" for line in text.splitlines())


async def test_calibrate_deduplicates_records_and_refuses_conflicts(tmp_path, capsys):
    recs = await _records(60, 60)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    replay.save(recs, a)
    replay.save(recs[:30], b)  # the same problems again: counted once
    out = tmp_path / "policy.json"
    assert main(["calibrate", "--data", str(a), "--data", str(b), "--target-risk", "0.1", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["calibration"]
    assert summary["items"] == 120 and summary["fit_items"] + summary["held_out_items"] == 120
    conflicting = replay.load(b)
    for rec in conflicting.values():
        rec.gold = "8"
    c = tmp_path / "c.jsonl"
    replay.save(conflicting.values(), c)
    assert main(["calibrate", "--data", str(a), "--data", str(c), "--target-risk", "0.1", "--out", str(out)]) == 1
    assert "two different records" in capsys.readouterr().err


async def test_calibrate_fit_all_uses_every_record(tmp_path):
    data = tmp_path / "records.jsonl"
    replay.save(await _records(60, 60), data)
    out = tmp_path / "policy.json"
    assert main(["calibrate", "--data", str(data), "--target-risk", "0.1", "--out", str(out), "--fit-all"]) == 0
    written = json.loads(out.read_text())
    assert written["calibration"]["fit_items"] == 120 and "held_out_items" not in written["calibration"]
    assert "SILENT_RISK" in written["rule"] and written["calibration"]["feasible"]


async def test_serve_flags_set_the_defaults_that_get_info_reports():
    import pytest

    from server.pb import guard_pb2 as pb
    from server.pb import guard_pb2_grpc
    from tests.server.conftest import start_server, stop_server

    args = build_parser().parse_args(["serve", "--score-mode", "full", "--probe-max-tokens", "20", "--num-paths", "5",
                                      "--probe-format", "continue", "--ars-retry-samples", "0"])
    config = guard_config(args)
    assert config.probe_max_tokens == 20 and config.probe_format.value == "continue"
    assert config.ars_retry_samples == 0
    handle = await start_server(ScriptedEngine(), config)
    try:
        info = await guard_pb2_grpc.GuardServiceStub(handle.channel).GetInfo(pb.GetInfoRequest())
        assert info.defaults.score_mode == "full" and info.defaults.num_paths == 5
    finally:
        await stop_server(handle)
    default = guard_config(build_parser().parse_args(["serve"]))
    # The probe defaults follow the probes benchmark (benchmarks/README.md, "Probes that read ..."), the
    # score mode the replay of soft scores against hard agreement ("Soft scores against hard agreement").
    assert default.defaults.score_mode.value == "hard" and default.probe_max_tokens == 24
    # The default scorer follows the evaluation (benchmarks/README.md, "Does the guard help?").
    assert default.defaults.scorer == "majority"
    assert default.probe_format.value == "continue" and default.probe_read.value == "greedy"
    assert default.ars_retry_samples == GuardConfig.ars_retry_samples
    with pytest.raises(SystemExit):
        guard_config(build_parser().parse_args(["serve", "--probe-max-tokens", "0"]))
    with pytest.raises(SystemExit):
        guard_config(build_parser().parse_args(["serve", "--ars-retry-samples", "-1"]))


async def test_serve_adaptive_and_probe_read_flags_reach_the_pipeline_and_get_info():
    from server.pb import guard_pb2 as pb
    from server.pb import guard_pb2_grpc
    from tests.server.conftest import start_server, stop_server

    args = build_parser().parse_args(["serve", "--adaptive", "--min-paths", "3", "--stop-level", "0.9",
                                      "--parallel-paths", "2", "--probe-read", "values"])
    config = guard_config(args)
    d = config.defaults
    assert (d.adaptive, d.min_paths, d.stop_level, d.parallel_paths) == (True, 3, 0.9, 2)
    assert config.probe_read.value == "values"
    handle = await start_server(ScriptedEngine(), config)
    try:
        info = await guard_pb2_grpc.GuardServiceStub(handle.channel).GetInfo(pb.GetInfoRequest())
        assert info.defaults.adaptive and info.defaults.min_paths == 3 and info.defaults.parallel_paths == 2
        assert info.defaults.stop_level == pytest.approx(0.9)
    finally:
        await stop_server(handle)
    assert not guard_config(build_parser().parse_args(["serve"])).defaults.adaptive


async def test_serve_confidence_abort_flags_reach_get_info():
    from server.pb import guard_pb2 as pb
    from server.pb import guard_pb2_grpc
    from tests.server.conftest import start_server, stop_server

    config = guard_config(build_parser().parse_args(
        ["serve", "--confidence-abort", "--confidence-warmup", "3", "--confidence-keep", "0.5"]))
    d = config.defaults
    assert (d.confidence_abort, d.confidence_warmup, d.confidence_keep) == (True, 3, 0.5)
    handle = await start_server(ScriptedEngine(), config)
    try:
        info = await guard_pb2_grpc.GuardServiceStub(handle.channel).GetInfo(pb.GetInfoRequest())
        assert info.defaults.confidence_abort and info.defaults.confidence_warmup == 3
        assert info.defaults.confidence_keep == pytest.approx(0.5)
    finally:
        await stop_server(handle)
    assert not guard_config(build_parser().parse_args(["serve"])).defaults.confidence_abort


def test_ask_confidence_abort_flag_and_the_aborted_line_render():
    from server.cli.ask import guard_request
    from server.cli.render import format_event
    from server.pb import guard_pb2 as pb

    assert guard_request(build_parser().parse_args(["ask", "q?", "--confidence-abort"])).confidence_abort
    assert not guard_request(build_parser().parse_args(["ask", "q?"])).HasField("confidence_abort")
    line = format_event(pb.GuardEvent(elapsed_ms=5, path=pb.PathFinished(index=3, num_tokens=17, aborted=True,
                                                                         finish_reason="low_confidence")))
    assert "path 3 aborted" in line and "17 tokens" in line


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--confidence-warmup", "0"], "--confidence-warmup"), (["--confidence-keep", "0"], "--confidence-keep"),
     (["--min-paths", "0"], "--min-paths"), (["--stop-level", "0.5"], "--stop-level"),
     (["--parallel-paths", "0"], "--parallel-paths"), (["--num-paths", "0"], "--num-paths")],
)
def test_serve_refuses_bad_request_defaults_naming_the_flag(flags, named):
    with pytest.raises(SystemExit) as err:
        guard_config(build_parser().parse_args(["serve", *flags]))
    assert str(err.value).startswith(f"error: {named}:")


async def test_ask_adaptive_flags_build_the_request_and_the_sampling_line_renders():
    from server.cli.ask import guard_request

    req = guard_request(build_parser().parse_args(["ask", "q?", "--adaptive", "--min-paths", "3", "--paths", "8"]))
    assert req.adaptive and req.min_paths == 3 and req.num_paths == 8 and not req.HasField("stop_level")
    assert not guard_request(build_parser().parse_args(["ask", "q?"])).HasField("adaptive")
    assert guard_request(build_parser().parse_args(["ask", "q?", "--no-adaptive"])).adaptive is False
    result = await GuardPipeline(ScriptedEngine(paths=[" Answer: 12"])).run(
        GuardParams(question="q?", num_paths=8, adaptive=True, scorer="majority"))
    text = format_response(result_to_response(result, return_paths_text=False))
    assert "sampling: adaptive, settled after 4 of 8 paths" in text


def test_ask_stream_prints_the_provisional_answer_then_the_verdict(capsys):
    import threading

    from tests.server.conftest import start_server, stop_server

    loop = asyncio.new_event_loop()
    handle = loop.run_until_complete(start_server(ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"])))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        code = main(["ask", "q?", "--stream", "--paths", "3", "--scorer", "majority",
                     "--address", f"127.0.0.1:{handle.server.port}"])
        out = capsys.readouterr().out
    finally:
        asyncio.run_coroutine_threadsafe(stop_server(handle), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert code == 0
    lines = out.splitlines()
    assert "provisional answer: 12" in lines[0]
    assert sum("finished: 12" in line for line in lines) == 3
    assert any("decision: COMMITTED" in line for line in lines)
    assert any(line.startswith("ACCEPT") for line in lines)
