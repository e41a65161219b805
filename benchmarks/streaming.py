"""Streaming on the quality sets, from the records: how often the decision would retract the provisional
answer, and how right provisional and decided answers are.

GuardStream's provisional answer is the first path to finish with an answer. Paths of a request start
together and decode at the same speed, so the first to finish is the one with the fewest tokens (ties:
the lowest index); records keep each path's tokens, so the replay needs no new sampling.
"""

from __future__ import annotations

from guard import replay
from guard.answers import Answer, answers_equivalent
from guard.policy import Policy


def provisional_answer(record: replay.Record) -> Answer | None:
    answers = record.answer_objects()
    lengths = [len(path) for path in record.top_logprobs]
    finished = [(lengths[i] if i < len(lengths) else 0, i) for i, a in enumerate(answers) if a is not None]
    return answers[min(finished)[1]] if finished else None


def retraction_row(recs: list[replay.Record], scorer: str, policy: Policy) -> dict:
    """Retraction rate (of requests that sent a provisional answer) by reason, and accuracies."""
    sent = retract_abstain = retract_changed = provisional_right = committed = committed_right = 0
    for rec in recs:
        provisional = provisional_answer(rec)
        if provisional is None:
            continue
        sent += 1
        provisional_right += rec.is_correct(provisional)
        outcome = replay.rescore(rec, scorer, policy)
        if not outcome.accepted or outcome.answer is None:
            retract_abstain += 1
        elif not answers_equivalent(provisional, outcome.answer):
            retract_changed += 1
        else:
            committed += 1
            committed_right += outcome.correct

    def share(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "requests": len(recs),
        "provisional_sent": sent,
        "retraction_rate": share(retract_abstain + retract_changed, sent),
        "retracted_abstain": share(retract_abstain, sent),
        "retracted_changed": share(retract_changed, sent),
        "provisional_accuracy": share(provisional_right, sent),
        "committed_accuracy": share(committed_right, committed),
    }
