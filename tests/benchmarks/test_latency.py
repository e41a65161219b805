"""Latency benchmark bookkeeping: interleaved arms, per-arm summaries and the printed table."""

from benchmarks.latency import run_arms_interleaved, summarise, table_lines


def _out(total_ms, probe_ms=0.0, score_ms=0.0, probes=0, cut=0):
    timings = {"sample": total_ms - probe_ms - score_ms, "total": total_ms}
    if probe_ms:
        timings.update(probe=probe_ms, score=score_ms)
    return {"tokens": 10, "timings": timings, "overhead_ms": 1.0, "probes": probes, "probes_truncated": cut}


def test_interleaved_arms_take_turns_per_question():
    order = []

    def arm(name):
        def call(q):
            order.append((q, name))
            return _out(100.0)
        return call

    results = run_arms_interleaved([("raw", arm("raw")), ("guard", arm("guard"))], ["q1", "q2"])
    assert order == [("q1", "raw"), ("q1", "guard"), ("q2", "raw"), ("q2", "guard")]
    assert set(results) == {"raw", "guard"} and len(results["raw"]["latencies_s"]) == 2


def test_summary_shares_and_table():
    guard = summarise([(1.0, _out(1000.0, 200.0, 100.0, probes=16, cut=4)), (2.0, _out(2000.0)),
                       (3.0, _out(3000.0, 600.0, 900.0, probes=8, cut=2))], 6.0)
    assert guard["probes_truncated_share"] == 0.25
    # Per request: 30%, 0% (no ARS, nothing probed), 50% -> median 30%.
    assert guard["probe_score_share_p50"] == 0.3
    assert guard["p50_s"] == 2.0 and guard["requests_per_s"] == 0.5
    raw = summarise([(0.5, _out(500.0)), (1.5, _out(1500.0))], 2.0)
    lines = table_lines({"raw@c1": raw, "guard-trace-contested-n8@c1": guard})
    row = next(line for line in lines if line.startswith("guard-trace-contested-n8@c1"))
    assert "2.00" in row and "30.0" in row  # x raw p50 = 2.0 / 1.0
    assert any(line.strip().startswith("guard-trace-contested-n8@c1") and "probe=" in line
               and "probes cut at limit 25%" in line for line in lines)


def test_stream_arm_summary_reports_provisional_time_and_retractions():
    def streamed(total_ms, provisional_s, retracted):
        return {**_out(total_ms), "provisional_s": provisional_s, "retracted": retracted}

    stream = summarise([(2.0, streamed(2000.0, 0.5, False)), (3.0, streamed(3000.0, 0.7, True)),
                        (4.0, streamed(4000.0, 0.9, False))], 9.0)
    assert stream["provisional_p50_s"] == 0.7 and abs(stream["retraction_rate"] - 1 / 3) < 1e-9
    assert "provisional_p50_s" not in summarise([(1.0, _out(1000.0))], 1.0)
    raw = summarise([(0.5, _out(500.0)), (1.5, _out(1500.0))], 2.0)
    lines = table_lines({"raw@c1": raw, "stream-majority-n8@c1": stream})
    assert any("provisional p50 0.70 s = 0.70x raw" in line and "decision p50 3.00 s = 3.00x raw" in line
               for line in lines)


def test_adaptive_arms_carry_the_stop_level_when_given():
    from types import SimpleNamespace

    from benchmarks.latency import guard_arms

    sent = []

    class Stub:
        def Guard(self, request, timeout):
            sent.append(request)
            return SimpleNamespace(timings=[], usage=[], paths=[], sub_questions=[], engine_wait_ms=0.0)

    args = SimpleNamespace(max_tokens=16, score_mode=None, stream=False, confidence_abort=False, adaptive=[4],
                           stop_level=0.6)
    arms = dict(guard_arms(Stub(), args, [8], ["majority"]))
    assert set(arms) == {"guard-majority-n8", "guard-majority-adaptive-p4-s0.6-n8"}
    arms["guard-majority-adaptive-p4-s0.6-n8"]("q")
    assert sent[-1].adaptive and sent[-1].parallel_paths == 4 and abs(sent[-1].stop_level - 0.6) < 1e-6
    arms["guard-majority-n8"]("q")
    assert not sent[-1].adaptive and not sent[-1].HasField("stop_level")
    # Without --stop-level the server's default applies: the field stays unset.
    args.stop_level = None
    arms = dict(guard_arms(Stub(), args, [8], ["majority"]))
    arms["guard-majority-adaptive-p4-n8"]("q")
    assert not sent[-1].HasField("stop_level")
