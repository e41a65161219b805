"""Batched probing of every path with every sub-question, and batched teacher-forced scoring of candidates."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from guard.answers import normalize_answer
from guard.consistency import SoftAnswer, strict_mode
from guard.engine import Engine, Prompt, SampleSpec, ScoreItem
from guard.params import ScoreMode
from guard.prompts import PromptBuilder
from guard.result import PhaseUsage


class ProbeRead(enum.Enum):
    """How a probe's answer is read."""

    # The value of the probe's short greedy completion.
    GREEDY = "greedy"
    # The most likely, under the probe prompt (teacher-forced), of the values the path itself wrote and
    # the greedy answer: a probe then names which of the path's own results answers the sub-question.
    VALUES = "values"


@dataclass
class ProbeOutcome:
    prompts: list[list[Prompt]]  # [k][i]
    # answers[k][i]: normalised short answer ("" when none could be read).
    answers: list[list[str]]
    # surface[k][normalised]: the first raw form seen, used as the continuation when scoring.
    surface: list[dict[str, str]]


# Ends a clause of a probe answer that goes on past its value ("15, then 15 + 6 = 21").
_CLAUSE_END_RE = re.compile(r",\s|;|\.\s|\s(?:then|so|and)\s", re.IGNORECASE)
_STARTS_WITH_VALUE_RE = re.compile(r"\s*[-+−]?\s*[$€£¥]?\s*\d")
# A value followed by more arithmetic: the left side of the next link of a chain ("15" of "15 + 6").
_LEADING_VALUE_RE = re.compile(
    r"\s*(?P<value>[-−]?[$€£¥]?\s*\d[\d,]*(?:\.\d+)?%?)"
    r"\s*[-+*/×÷x]\s*[$€£¥(]?\s*\d"
)


def _short(raw: str) -> str:
    """The value a probe answered, from the first line of its completion.

    Probes are asked for a short value, but small models often answer with the calculation, and go on
    past it: "24 - 9 = 15, then 15 + 6 = 21" answers "How many are left after selling?" with 15, the
    value of its first complete equation (not the last one, which is usually the final answer). A line
    that starts with a plain value keeps it ("15, then 15 + 6 = 21" is 15 too); a chained equation
    reads its first result ("24 - 9 = 15 + 6 = 21" is 15). A trailing period or unmatched bracket is
    dropped.
    """
    line = raw.strip().splitlines()[0] if raw.strip() else ""
    if "=" in line:
        first_clause = _CLAUSE_END_RE.split(line, maxsplit=1)[0]
        if "=" not in first_clause and _STARTS_WITH_VALUE_RE.match(first_clause):
            line = first_clause
        else:
            result = _CLAUSE_END_RE.split(line.split("=", 1)[1], maxsplit=1)[0].split("=", 1)[0]
            lead = _LEADING_VALUE_RE.match(result)
            line = lead.group("value") if lead is not None else result
    line = line.strip().rstrip(".").strip()
    # The close of a bracket the value sat in: "12 (7 + 5 = 12)" is 12.
    return line.rstrip(")").strip() if line.count(")") > line.count("(") else line


async def probe_paths(
    engine: Engine,
    prompts: PromptBuilder,
    question: str,
    path_texts: Sequence[str],
    sub_questions: Sequence[str],
    *,
    system_prompt: str,
    images: Sequence[object],
    max_tokens: int,
    request_id: str,
    usage: PhaseUsage,
) -> ProbeOutcome:
    """Ask every sub-question of every path in one batch (N x K short greedy completions)."""
    grid = prompts.probe_prompts(question, path_texts, sub_questions, system_prompt, images)
    flat = [p for row in grid for p in row]
    spec = SampleSpec(n=1, temperature=0.0, max_tokens=max_tokens, stop=prompts.probe_stop)
    results = await engine.generate_many(flat, spec, request_id)
    answers: list[list[str]] = []
    surface: list[dict[str, str]] = []
    num_paths = len(path_texts)
    for k in range(len(sub_questions)):
        row: list[str] = []
        forms: dict[str, str] = {}
        for i in range(num_paths):
            result = results[k * num_paths + i]
            completion = result.completions[0] if result.completions else None
            # A probe cut at its token limit never reached the end of its line: the value in it may be
            # cut too ("287 + 76 = 44" for 443), so it is left unanswered rather than read wrong.
            truncated = completion is not None and completion.truncated
            usage.add(result.prompt_tokens, result.generated_tokens, result.cached_prompt_tokens, int(truncated))
            short = _short(completion.text) if completion is not None and not truncated else ""
            answer = normalize_answer(short) if short else None
            norm = answer.normalized if answer is not None else ""
            row.append(norm)
            if norm and norm not in forms:
                forms[norm] = short
        answers.append(row)
        surface.append(forms)
    return ProbeOutcome(grid, answers, surface)


@dataclass
class ScorePlan:
    """The teacher-forced scorings that turn probe answers into soft distributions."""

    items: list[ScoreItem]
    # index[j]: (sub-question k, path i, candidate) that items[j] scores.
    index: list[tuple[int, int, str]]
    # Distributions known without scoring: one candidate only (all mass on it), or none.
    base: list[list[SoftAnswer | None]]


# A sub-question on which at least this share of paths gives the modal answer is not contested: the
# CONTESTED score mode leaves it to hard agreement. At 0.75 that is 6 of 8 paths (3 of 4).
CONTESTED_AGREEMENT = 0.75
# Candidates scored per sub-question in FULL mode.
FULL_MAX_CANDIDATES = 4


def plan_scoring(prompts: PromptBuilder, probes: ProbeOutcome, mode: ScoreMode = ScoreMode.FULL) -> ScorePlan:
    """Which candidate answers to score under which path's probe prompt.

    FULL: for sub-question k the `FULL_MAX_CANDIDATES` most common distinct probe answers, each under
    every path. CONTESTED: only sub-questions that most paths do not agree on, and per path only two
    candidates, the mode against the path's own answer (against the runner-up when the path's own
    answer is the mode or empty): consistency only reads the mass a path puts on the mode, and
    weighing the mode against what the path itself answered keeps a path that answered something
    else from looking half-convinced by the mode. HARD: nothing. Sub-questions with a single
    candidate never need scoring (all mass on it); unscored ones keep hard agreement.
    """
    items: list[ScoreItem] = []
    index: list[tuple[int, int, str]] = []
    base: list[list[SoftAnswer | None]] = [[None] * len(row) for row in probes.answers]
    for k, row in enumerate(probes.answers):
        counts: dict[str, int] = {}
        for a in row:
            if a:
                counts[a] = counts.get(a, 0) + 1
        if len(counts) == 1:
            (only,) = counts
            base[k] = [{only: 1.0} for _ in row]
            continue
        # Consistency reads only the mass a path puts on the strict mode: without one, nothing to score.
        modal, top = strict_mode(row)
        if mode is ScoreMode.HARD or len(counts) < 2 or not modal:
            continue
        # Ties in count are ordered by the answer, never by path order.
        ranked = sorted(counts, key=lambda a: (-counts[a], a))
        if mode is ScoreMode.CONTESTED and top >= CONTESTED_AGREEMENT * len(row):
            continue
        for i, prompt in enumerate(probes.prompts[k]):
            if mode is ScoreMode.FULL:
                candidates = ranked[:FULL_MAX_CANDIDATES]
            else:
                own = row[i]
                candidates = [ranked[0], own if own and own != ranked[0] else ranked[1]]
            for cand in candidates:
                items.append(ScoreItem(prompt, prompts.continuation(prompt, probes.surface[k][cand])))
                index.append((k, i, cand))
    return ScorePlan(items, index, base)


async def score_candidates(
    engine: Engine,
    plan: ScorePlan,
    *,
    request_id: str,
    usage: PhaseUsage,
) -> list[list[SoftAnswer | None]]:
    """Soft answer distribution of every path on every sub-question, from one batch of scorings:
    a softmax over the candidates' log-likelihoods under the path's probe prompt."""
    soft = [list(row) for row in plan.base]
    if not plan.items:
        return soft
    scores = await engine.score(plan.items, request_id)
    logits: dict[tuple[int, int], dict[str, float]] = {}
    for (k, i, cand), score in zip(plan.index, scores):
        usage.add(score.prompt_tokens, 0, score.cached_prompt_tokens)
        logits.setdefault((k, i), {})[cand] = score.logprob_sum
    for (k, i), by_cand in logits.items():
        top = max(by_cand.values())
        exp = {c: math.exp(v - top) for c, v in by_cand.items()}
        total = sum(exp.values())
        soft[k][i] = {c: v / total for c, v in exp.items()}
    return soft


# Values of one path scored per sub-question under ProbeRead.VALUES (the first ones it wrote).
MAX_VALUE_CANDIDATES = 8


def plan_value_reading(
    prompts: PromptBuilder, probes: ProbeOutcome, path_values: Sequence[Sequence[str]],
    max_values: int = MAX_VALUE_CANDIDATES,
) -> ScorePlan:
    """For each path and sub-question, the candidates to score: the path's own written values and its
    greedy probe answer. Paths that wrote no value keep their greedy answer (nothing to choose)."""
    items: list[ScoreItem] = []
    index: list[tuple[int, int, str]] = []
    for k, row in enumerate(probes.answers):
        for i, greedy in enumerate(row):
            candidates = list(dict.fromkeys([*path_values[i][:max_values], *([greedy] if greedy else [])]))
            if len(candidates) < 2:
                continue
            for cand in candidates:
                surface = probes.surface[k].get(cand, cand)
                items.append(ScoreItem(probes.prompts[k][i], prompts.continuation(probes.prompts[k][i], surface)))
                index.append((k, i, cand))
    return ScorePlan(items, index, [])


async def read_values(
    engine: Engine, plan: ScorePlan, probes: ProbeOutcome, *, request_id: str, usage: PhaseUsage,
) -> ProbeOutcome:
    """Probe answers re-read as the most likely candidate of each planned (sub-question, path)."""
    if not plan.items:
        return probes
    scores = await engine.score(plan.items, request_id)
    logprobs: dict[tuple[int, int], dict[str, float]] = {}
    for (k, i, cand), score in zip(plan.index, scores):
        usage.add(score.prompt_tokens, 0, score.cached_prompt_tokens)
        logprobs.setdefault((k, i), {})[cand] = score.logprob_sum
    # Equal likelihoods go to the smaller candidate string, never to the order they were planned in.
    best = {key: min(by_cand, key=lambda c, b=by_cand: (-b[c], c)) for key, by_cand in logprobs.items()}
    answers = [list(row) for row in probes.answers]
    surface = [dict(forms) for forms in probes.surface]
    for (k, i), cand in best.items():
        answers[k][i] = cand
        surface[k].setdefault(cand, cand)
    return replace(probes, answers=answers, surface=surface)
