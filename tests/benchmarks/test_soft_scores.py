"""Replaying trace with and without its soft scores."""

from benchmarks import soft_scores
from guard import replay
from guard.policy import Policy


def record(pid, gold, answers, steps, soft=None):
    return replay.Record(
        problem_id=pid, gold=gold, answers=[(a, a, "number") for a in answers], top_logprobs=[],
        sub_questions=[f"s{k}?" for k in range(len(steps))], ars_source="request",
        path_answers=[list(s) for s in steps], soft=soft, gold_sub_answers=[], latency_ms=0.0, generated_tokens=40,
    )


def test_without_soft_is_hard_agreement():
    soft = [[{"3": 0.9, "4": 0.1}, {"3": 0.2, "4": 0.8}, None]]
    rec = record("a", "7", ["7", "7", "8"], [["3", "4", "3"]], soft)
    hard = soft_scores.without_soft(rec)
    assert hard.soft is None and rec.soft == soft
    # The same answers, probe answers and gold; only the soft distributions are gone.
    assert (hard.answers, hard.path_answers, hard.gold) == (rec.answers, rec.path_answers, rec.gold)


def test_compare_pairs_both_modes_on_the_same_records():
    # Soft scores that change nothing (all mass on each path's own answer) give equal modes.
    recs = []
    for i in range(12):
        right = i % 2 == 0
        answers = ["7", "7", "7", "7"] if right else ["8", "8", "9", "7"]
        steps = [["3", "3", "3", "3"] if right else ["3", "4", "5", "3"]]
        soft = [[{a: 1.0} for a in steps[0]]]
        recs.append(record(f"p{i}", "7", answers, steps, soft))
    out = soft_scores.compare(recs, Policy(), resamples=50)
    assert out["problems"] == 12 and out["with_soft_scores"] == 12
    assert out["auroc_hard_minus_soft"][0] == 0.0
    assert out["accepted_soft"] == out["accepted_hard"]
    assert out["right_among_accepted_soft"] <= out["accepted_soft"]


def test_load_runs_keeps_the_same_problem_of_two_runs_apart(tmp_path):
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        replay.save([record("p", "7", ["7"], [])], tmp_path / run / "records-x.jsonl")
    assert sorted(soft_scores.load_runs([tmp_path / "one", tmp_path / "two"])) == ["one:p", "two:p"]
