"""The verdict tables: columns per scorer, compute-matched path counts, gold-step checks."""

import math

import pytest

from benchmarks import verdict
from guard import replay
from guard.policy import Policy


def record(pid, gold, answers, steps=(), gold_steps=(), usage=None, greedy=None):
    enc = [(a, a, "number") if a else None for a in answers]
    return replay.Record(
        problem_id=pid, gold=gold, answers=enc, top_logprobs=[], sub_questions=[f"s{k}?" for k in range(len(steps))],
        ars_source="request" if steps else "none", path_answers=[list(s) for s in steps], soft=None,
        gold_sub_answers=list(gold_steps), latency_ms=0.0, generated_tokens=40, greedy_answer=greedy, usage=usage,
    )


def test_engine_tokens_and_matched_paths():
    usage = {"sample": [100, 200, 80], "probe": [1000, 40, 900], "score": [500, 0, 400]}
    rec = record("p", "7", ["7"] * 4, usage=usage)
    assert verdict.engine_tokens(rec) == (200 + 20) + (40 + 100) + (0 + 100)
    assert verdict.engine_tokens(rec, ("sample",)) == 220
    # trace spent 460 tokens where sampling alone spent 220: 8 x 460 / 220 = 16.7 -> 17 paths.
    assert verdict.matched_num_paths([rec], 8) == 17
    assert verdict.matched_num_paths([record("q", "7", ["7"])], 8) is None  # no usage kept
    assert math.isnan(verdict.engine_tokens(record("q", "7", ["7"]), ("sample",)))


def test_columns_pair_scorers_baselines_and_matched_votes():
    recs = [record("a", "7", ["7", "7", "8"], greedy=["7", "7", "number"]), record("b", "5", ["6", "6", "5"])]
    matched = {"a": record("a", "7", ["7"] * 5)}
    cols = verdict.columns(recs, ["majority", "trace"], Policy(), matched)
    # Only problem "a" is in the matched run: every row keeps the same single problem.
    assert {len(v) for v in cols.correct.values()} == {1}
    assert cols.correct["majority@matched"] == [True] and cols.correct["single"] == [True]
    assert cols.correct["greedy"] == [True]
    cols = verdict.columns(recs, ["majority"], Policy())
    assert cols.correct["majority"] == [True, False] and "greedy" not in cols.correct  # greedy not run on "b"


def test_gold_steps_reads_probe_accuracy_echo_and_ffs():
    # Gold: first step 3, final 7. Paths 0-1 right (7): path 0 reads the step right, path 1 echoes 7.
    # Path 2 wrong (8), with step 4 against a mode of... no mode (3, 7, 4): FFS has nothing to match.
    rec = record("a", "7", ["7", "7", "8"], steps=[["3", "7", "4"]], gold_steps=["3"])
    out = verdict.gold_steps([rec], Policy())
    assert out["intermediate_probes_on_right_paths"] == 2
    assert out["probe_accuracy"] == pytest.approx(0.5) and out["probe_echo_rate"] == pytest.approx(0.5)


def test_intervals_and_targets_on_a_small_set():
    recs = [record(f"r{i}", "7", ["7"] * 4) for i in range(10)] + [record(f"w{i}", "7", ["8", "8", "9", "7"])
                                                                   for i in range(10)]
    result = verdict.intervals(verdict.columns(recs, ["majority", "deepconf", "trace"], Policy()), 200, seed=0)
    assert result.per_scorer["majority"]["auroc"].estimate == 1.0
    assert result.per_scorer["single"]["accuracy"].estimate == 0.5
    lines = verdict.table("set", result)
    assert lines[0] == "set" and any("trace - majority" in line for line in lines)
    t = verdict.targets(result)
    assert t["trace_acc@50%_over_single"] == pytest.approx(2.0)
