"""Does the guard help? Paired-bootstrap tables of scorers, raw baselines, compute-matched votes and gold steps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from benchmarks.stats import ScorerIntervals, scorer_intervals
from guard import replay as records
from guard.answers import answers_equivalent, normalize_answer
from guard.policy import Policy

# Paired differences the verdict reads; "@matched" rows join when a compute-matched run exists.
VERDICT_PAIRS = (("trace", "majority"), ("trace", "deepconf"))
MATCHED_SCORERS = ("majority", "deepconf")


def engine_tokens(rec: records.Record, phases: Sequence[str] | None = None) -> float:
    """Tokens the engine computed for one problem: generated plus uncached prompt tokens, per phase.

    Records made before usage was kept count generated tokens only (nan when nothing is known).
    """
    if not rec.usage:
        return float(rec.generated_tokens) if phases is None else float("nan")
    total = 0
    for phase, (prompt, generated, cached) in rec.usage.items():
        if phases is None or phase in phases:
            total += generated + max(0, prompt - cached)
    return float(total)


def matched_num_paths(recs: Sequence[records.Record], num_paths: int, cap: int = 32) -> int | None:
    """Paths a plain vote could sample for what `trace` spent: N x (trace's tokens / sampling's tokens)."""
    full = [engine_tokens(r) for r in recs if r.usage]
    sample = [engine_tokens(r, ("sample",)) for r in recs if r.usage]
    if not full or not sum(sample):
        return None
    return max(num_paths, min(cap, round(num_paths * sum(full) / sum(sample))))


@dataclass(frozen=True)
class Columns:
    """Per scorer, aligned over the same problems: was its answer right, and its (gated) confidence."""

    correct: dict[str, list[bool]]
    confidence: dict[str, list[float]]


def columns(recs: Sequence[records.Record], scorers: Sequence[str], policy: Policy,
            matched: Mapping[str, records.Record] | None = None) -> Columns:
    """Every scorer on the same problems, plus the raw single sample and greedy answer as constant-confidence rows.

    With `matched` (records of a compute-matched vote, by problem id), `SCORER@matched` rows join;
    problems missing from it are dropped from every row so the comparison stays paired.
    """
    if matched is not None:
        recs = [r for r in recs if r.problem_id in matched]
    correct: dict[str, list[bool]] = {}
    confidence: dict[str, list[float]] = {}
    for scorer in scorers:
        outcomes = [records.rescore(r, scorer, policy) for r in recs]
        correct[scorer] = [o.correct for o in outcomes]
        confidence[scorer] = [o.gated_confidence for o in outcomes]
    if matched is not None:
        for scorer in MATCHED_SCORERS:
            outcomes = [records.rescore(matched[r.problem_id], scorer, policy) for r in recs]
            correct[f"{scorer}@matched"] = [o.correct for o in outcomes]
            confidence[f"{scorer}@matched"] = [o.gated_confidence for o in outcomes]
    correct["single"] = [r.is_correct(r.answer_objects()[0] if r.answers else None) for r in recs]
    confidence["single"] = [0.0] * len(recs)
    if recs and all(r.greedy_answer is not None for r in recs):
        correct["greedy"] = [r.is_correct(records.decode_answer(r.greedy_answer)) for r in recs]
        confidence["greedy"] = [0.0] * len(recs)
    return Columns(correct, confidence)


def intervals(cols: Columns, num_resamples: int, seed: int) -> ScorerIntervals:
    pairs = [p for p in VERDICT_PAIRS if p[1] in cols.correct]
    pairs += [("trace", f"{s}@matched") for s in MATCHED_SCORERS if f"{s}@matched" in cols.correct]
    return scorer_intervals(cols.correct, cols.confidence, pairs=pairs, num_resamples=num_resamples, seed=seed)


def gold_steps(recs: Sequence[records.Record], policy: Policy) -> dict:
    """How well probes read gold intermediate values (problems with gold sub-answers for every sub-question).

    On paths whose final answer is right, over intermediate sub-questions (gold value differs from the
    gold final answer): share of probe answers equal to the gold value, and share equal to the path's
    own final answer (echo). FFS: share of wrong paths whose FFS is their first wrong gold step.
    """
    hits = echoes = asked = 0
    ffs_match = ffs_total = 0
    for rec in recs:
        if not rec.gold_sub_answers or len(rec.gold_sub_answers) != len(rec.sub_questions):
            continue
        gold_final = normalize_answer(rec.gold)
        answers = rec.answer_objects()
        for k, gold_value in enumerate(rec.gold_sub_answers):
            gold = normalize_answer(gold_value)
            if gold is None or (gold_final is not None and answers_equivalent(gold, gold_final)):
                continue
            for i, answer in enumerate(answers):
                if not rec.is_correct(answer):
                    continue
                asked += 1
                got = normalize_answer(rec.path_answers[k][i]) if rec.path_answers[k][i] else None
                hits += got is not None and answers_equivalent(got, gold)
                echoes += got is not None and answers_equivalent(got, answer)
        m, t = records.ffs_matches(rec, policy)
        ffs_match, ffs_total = ffs_match + m, ffs_total + t
    return {
        "intermediate_probes_on_right_paths": asked,
        "probe_accuracy": hits / asked if asked else float("nan"),
        "probe_echo_rate": echoes / asked if asked else float("nan"),
        "ffs_wrong_paths": ffs_total,
        "ffs_match_rate": ffs_match / ffs_total if ffs_total else float("nan"),
    }


def _ci(x) -> str:
    if math.isnan(x.estimate):
        return "        n/a       "
    return f"{x.estimate:5.3f} [{x.low:5.3f},{x.high:5.3f}]"


def table(key: str, result: ScorerIntervals) -> list[str]:
    """Rows of one dataset: per scorer AUROC, AURC, accuracy and selective accuracy, then the paired differences."""
    lines = [key]
    head = f"  {'method':<18}{'acc':>20}{'AUROC':>20}{'AURC':>20}{'acc@20%':>20}{'acc@50%':>20}{'acc@80%':>20}"
    lines.append(head)
    for scorer, row in result.per_scorer.items():
        lines.append(
            f"  {scorer:<18}{_ci(row['accuracy']):>20}{_ci(row['auroc']):>20}{_ci(row['aurc']):>20}"
            f"{_ci(row['selective_accuracy@0.2']):>20}{_ci(row['selective_accuracy@0.5']):>20}"
            f"{_ci(row['selective_accuracy@0.8']):>20}"
        )
    for pair, diff in result.differences.items():
        lines.append(f"  {pair:<30} AUROC diff {_ci(diff['auroc'])}   AURC diff {_ci(diff['aurc'])}")
    return lines


def targets(result: ScorerIntervals) -> dict:
    """The issue's targets, read off one table: selective accuracy against raw, trace against the votes."""
    per = result.per_scorer
    single = per["single"]["accuracy"].estimate
    trace = per.get("trace", {})
    out: dict = {}
    if trace and single > 0:
        out["trace_acc@50%_over_single"] = trace["selective_accuracy@0.5"].estimate / single
        out["trace_acc@20%_over_single"] = trace["selective_accuracy@0.2"].estimate / single
    for pair, diff in result.differences.items():
        out[f"{pair} AUROC"] = diff["auroc"].estimate
        out[f"{pair} AUROC interval above 0"] = diff["auroc"].low > 0
    return out


def as_json(result: ScorerIntervals) -> dict:
    return asdict(result)
