"""Replay of guard decisions from recorded samples: JSONL records that re-score without re-sampling."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from guard.answers import (
    Answer,
    AnswerKind,
    answers_equivalent,
    cluster_answers,
    normalize_answer,
    representative,
)
from guard.consistency import analyze_ars
from guard.policy import Policy, decide
from guard.result import Decision, GuardResult, Region
from guard.scorers import SCORERS, ScoringInput, select
from guard.stages import Stage


def encode_answer(answer: Answer | None) -> tuple[str, str, str] | None:
    """An answer as stored in a records file: (raw, normalized, kind)."""
    return (answer.raw, answer.normalized, answer.kind.value) if answer else None


def decode_answer(stored) -> Answer | None:
    return Answer(stored[0], stored[1], AnswerKind(stored[2])) if stored else None


@dataclass
class Record:
    """One problem: gold answer, each path's answer and token log-probs, and the ARS probe results."""

    problem_id: str
    gold: str
    answers: list[tuple[str, str, str] | None]  # (raw, normalized, kind) per path
    top_logprobs: list[list[list[float]]]
    sub_questions: list[str]
    ars_source: str
    path_answers: list[list[str]]  # [k][i]
    soft: list[list[dict[str, float] | None]] | None
    # Per sub-question gold values (GSM8K), for the FFS check.
    gold_sub_answers: list[str]
    latency_ms: float
    generated_tokens: int
    # Raw greedy (temperature 0) answer as (raw, normalized, kind); [] when it had none, None when not run.
    greedy_answer: list | None = None
    # The problem text, so replay finds sub-questions that restate it ("" in records made before).
    question: str = ""
    # Engine tokens per phase: phase -> [prompt, generated, cached prompt] (None in records made before).
    usage: dict[str, list[int]] | None = None
    # Per path, the normalised values it wrote in its working (None in records made before).
    path_values: list[list[str]] | None = None
    # Wall time per pipeline stage ("sample", "probe", "score", ...; None in records made before).
    timings_ms: dict[str, float] | None = None

    @classmethod
    def from_result(
        cls, problem_id: str, gold: str, gold_sub_answers, result: GuardResult, question: str = ""
    ) -> Record:
        inp = result.scoring
        ars = inp.ars if inp is not None else None
        return cls(
            problem_id=problem_id,
            gold=gold,
            answers=[encode_answer(a) for a in (inp.answers if inp else [])],
            top_logprobs=[[[round(x, 3) for x in alts] for alts in path] for path in (inp.top_logprobs if inp else [])],
            sub_questions=list(ars.sub_questions) if ars else [],
            ars_source=result.ars_source.value,
            path_answers=ars.path_answers if ars else [],
            soft=ars.soft if ars else None,
            gold_sub_answers=list(gold_sub_answers),
            latency_ms=result.timings_ms.get(Stage.TOTAL, 0.0),
            generated_tokens=sum(u.generated_tokens for u in result.usage.values()),
            question=question,
            usage={phase: [u.prompt_tokens, u.generated_tokens, u.cached_prompt_tokens]
                   for phase, u in result.usage.items()},
            path_values=[list(p.path_values) for p in result.paths],
            timings_ms={stage: round(ms, 1) for stage, ms in result.timings_ms.items()},
        )

    def answer_objects(self) -> list[Answer | None]:
        return [decode_answer(a) for a in self.answers]

    def scoring_input(self, policy: Policy) -> ScoringInput:
        answers = self.answer_objects()
        ars = None
        if self.sub_questions:
            ars = analyze_ars(
                self.sub_questions, self.path_answers, self.soft,
                final_answers=[a.normalized if a else "" for a in answers], question=self.question,
                ffs_threshold=policy.ffs_agreement,
            )
        return ScoringInput(answers, cluster_answers(answers), self.top_logprobs, ars)

    def is_correct(self, answer: Answer | None) -> bool:
        gold = normalize_answer(self.gold)
        return answer is not None and gold is not None and answers_equivalent(answer, gold)


@dataclass
class Outcome:
    correct: bool
    confidence: float
    accepted: bool
    region: Region
    ars_agreement: float  # mean hard agreement of the ARS (nan when none)
    any_correct: bool
    # Whether the deployed rule could accept this item at some threshold (no tie, no silent-failure
    # gate, an answer): calibration certifies the threshold over these.
    eligible: bool = True
    echo: int = 0  # echo sub-questions (restating the question or the paths' own final answers)
    sub_questions: int = 0
    # The winning cluster's answer (None when no path answered).
    answer: Answer | None = None

    @property
    def gated_confidence(self) -> float:
        """The confidence as the deployed rule sees it: -inf where a gate abstains at any threshold."""
        return self.confidence if self.eligible else float("-inf")


def rescore(record: Record, scorer: str, policy: Policy) -> Outcome:
    inp = record.scoring_input(policy)
    sel = select(SCORERS[scorer], inp)
    winner_paths = list(inp.clusters[sel.winner]) if sel.winner is not None else []
    verdict = decide(sel, inp.ars, winner_paths, scorer, policy)
    answer = inp.answers[representative(inp.answers, winner_paths)] if winner_paths else None
    return Outcome(
        correct=record.is_correct(answer),
        confidence=sel.confidence,
        accepted=verdict.decision is Decision.ACCEPT,
        region=verdict.region,
        ars_agreement=inp.ars.mean_agreement if inp.ars else float("nan"),
        any_correct=any(record.is_correct(a) for a in inp.answers),
        eligible=verdict.gate is None,
        echo=inp.ars.num_echo if inp.ars else 0,
        sub_questions=len(inp.ars.sub_questions) if inp.ars else 0,
        answer=answer,
    )


def ffs_matches(record: Record, policy: Policy) -> tuple[int, int]:
    """For wrong paths with gold sub-answers: (paths whose FFS equals the first sub-question they got wrong, paths)."""
    if not record.gold_sub_answers or len(record.gold_sub_answers) != len(record.sub_questions):
        return 0, 0
    inp = record.scoring_input(policy)
    if inp.ars is None:
        return 0, 0
    gold_subs = [normalize_answer(v) for v in record.gold_sub_answers]
    matches = total = 0
    for i, answer in enumerate(inp.answers):
        if record.is_correct(answer):
            continue
        first_wrong = None
        for k, gold in enumerate(gold_subs):
            got = normalize_answer(inp.ars.path_answers[k][i]) if inp.ars.path_answers[k][i] else None
            if gold is None or got is None or not answers_equivalent(got, gold):
                first_wrong = k + 1
                break
        if first_wrong is None:
            continue
        total += 1
        matches += int(inp.ars.first_failure_step[i] == first_wrong)
    return matches, total


def merge(record_sets: Iterable[Iterable[Record]]) -> list[Record]:
    """Records of several files as one set, one record per problem id.

    The same problem read twice from identical records counts once (it would otherwise land in both
    halves of a calibration split); two different records under one id are refused.
    """
    by_id: dict[str, Record] = {}
    for records in record_sets:
        for rec in records:
            seen = by_id.get(rec.problem_id)
            if seen is None:
                by_id[rec.problem_id] = rec
            elif (seen.gold, seen.answers, seen.path_answers) != (rec.gold, rec.answers, rec.path_answers):
                raise ValueError(f"problem {rec.problem_id!r} has two different records (gold or samples differ)")
    return list(by_id.values())


def save(records: Iterable[Record], path: Path) -> None:
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r.__dict__) + "\n")


def load(path: Path) -> dict[str, Record]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            data["answers"] = [tuple(a) if a else None for a in data["answers"]]
            out[data["problem_id"]] = Record(**data)
    return out
