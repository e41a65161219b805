"""Streaming replayed on records: provisional answer = first path to finish, retractions by reason."""

import math

from benchmarks import streaming
from guard import replay
from guard.policy import Policy


def record(answers, lengths, gold="7"):
    return replay.Record(
        problem_id="p", gold=gold, answers=[(a, a, "number") if a else None for a in answers],
        top_logprobs=[[[-0.1]] * n for n in lengths], sub_questions=[], ars_source="none", path_answers=[],
        soft=None, gold_sub_answers=[], latency_ms=0.0, generated_tokens=sum(lengths),
    )


def test_provisional_answer_is_the_shortest_path_with_an_answer():
    assert streaming.provisional_answer(record(["8", "7", "7"], [30, 10, 10])).normalized == "7"
    assert streaming.provisional_answer(record([None, "8", "7"], [5, 20, 30])).normalized == "8"
    assert streaming.provisional_answer(record([None, None], [5, 6])) is None


def test_retraction_row_counts_commits_changes_and_abstains():
    recs = [
        record(["7", "7", "7", "7"], [10, 20, 30, 40]),   # committed, right
        record(["8", "7", "7", "7"], [5, 20, 30, 40]),    # provisional 8, decided 7: changed
        record(["8", "7"], [5, 20]),                      # a tie: abstain
        record([None, None], [5, 5]),                     # nothing sent
    ]
    row = streaming.retraction_row(recs, "majority", Policy())
    assert row["provisional_sent"] == 3
    assert math.isclose(row["retraction_rate"], 2 / 3)
    assert math.isclose(row["retracted_changed"], 1 / 3) and math.isclose(row["retracted_abstain"], 1 / 3)
    assert math.isclose(row["provisional_accuracy"], 1 / 3)
    assert row["committed_accuracy"] == 1.0
