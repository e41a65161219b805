"""Batched probing of every path with every sub-question, and batched teacher-forced scoring of candidates."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from guard.answers import normalize_answer
from guard.consistency import SoftAnswer, restates, strict_mode
from guard.engine import Engine, Prompt, SampleSpec, ScoreItem, ScoreResult
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
    # answers[k][i]: normalised short answer ("" when none could be read, or sub-question k not asked).
    answers: list[list[str]]
    # surface[k][normalised]: the first raw form seen, used as the continuation when scoring.
    surface: list[dict[str, str]]
    # asked[k]: sub-question k was put to the paths (False: it restates the question, so every path's
    # answer to it is its final answer and the analysis leaves it out as an echo; see `skipped`).
    # Empty: all asked.
    asked: list[bool] = field(default_factory=list)
    # Engine requests the probes took: equal probe prompts (paths with the same working) are asked once.
    requests: int = 0

    def was_asked(self, k: int) -> bool:
        return not self.asked or self.asked[k]


_Item = TypeVar("_Item")


def distinct(items: Sequence[_Item], key: Callable[[_Item], Hashable]) -> tuple[list[_Item], list[int]]:
    """The first of each group of equal items (by `key`), and for every item the position of its group's
    first in that list: equal greedy probes and equal scorings give equal results, so each is sent once."""
    firsts: dict[Hashable, int] = {}
    unique: list[_Item] = []
    where: list[int] = []
    for item in items:
        k = key(item)
        if k not in firsts:
            firsts[k] = len(unique)
            unique.append(item)
        where.append(firsts[k])
    return unique, where


def prompt_key(prompt: Prompt) -> Hashable:
    # Images compare by identity: a request's probes all carry the very same decoded images.
    return prompt.text, tuple(id(image) for image in prompt.images)


def score_key(item: ScoreItem) -> Hashable:
    return prompt_key(item.context), item.continuation


def skipped(question: str, sub_questions: Sequence[str]) -> list[bool]:
    """Sub-questions not worth a probe: those that restate a question of the problem text. Their answer
    is each path's final answer, and the analysis leaves them out as echoes whatever the probes say."""
    return [restates(sub, question) for sub in sub_questions]


# Ends a clause of a probe answer that goes on past its value ("15, then 15 + 6 = 21").
_CLAUSE_END_RE = re.compile(r",\s|;|\.\s|\s(?:then|so|and)\s", re.IGNORECASE)
_STARTS_WITH_VALUE_RE = re.compile(r"\s*[-+−]?\s*[$€£¥]?\s*\d")
# A value followed by more arithmetic: the left side of the next link of a chain ("15" of "15 + 6").
_LEADING_VALUE_RE = re.compile(
    r"\s*(?P<value>[-−]?[$€£¥]?\s*\d[\d,]*(?:\.\d+)?%?)"
    r"\s*[-+*/×÷x]\s*[$€£¥(]?\s*\d"
)


# A value, then words with another number in them ("110 miles in 2 hours"): the value is the answer,
# and the text as a whole would read as no number at all.
_VALUE_THEN_NUMBERED_WORDS_RE = re.compile(
    r"\s*(?P<value>[-−]?[$€£¥]?\s*\d[\d,]*(?:\.\d+)?%?)\s+[A-Za-z][^\d]*\d"
)


# The first equation's result followed by more text: a number that the cut cannot have shortened.
_COMPLETE_FIRST_RESULT_RE = re.compile(
    r"\s*(?P<value>[-−]?[$€£¥]?\s*\d(?:\d|,(?=\d))*(?:\.\d+)?%?)(?=[^\d.,]|[.,]\D)"
)


def _first_line(raw: str) -> str:
    """The first non-blank line of a probe completion, stripped ("" when there is none)."""
    return raw.strip().splitlines()[0] if raw.strip() else ""


def _cut_short(raw: str) -> str:
    """The value of a probe cut at its token limit, when the cut cannot have touched it: the result of its
    first equation, followed by more text ("7 * 7 - 17 = 49 - 1" is 49); "" otherwise ("287 + 76 = 44"
    may be 443 cut short, so it stays unanswered)."""
    line = _first_line(raw)
    if "=" not in line:
        return ""
    match = _COMPLETE_FIRST_RESULT_RE.match(line.split("=", 1)[1])
    return match.group("value").strip() if match is not None else ""


def _short(raw: str) -> str:
    """The value a probe answered, from the first line of its completion.

    Probes are asked for a short value, but small models often answer with the calculation, and go on
    past it: "24 - 9 = 15, then 15 + 6 = 21" answers "How many are left after selling?" with 15, the
    value of its first complete equation (not the last one, which is usually the final answer). A line
    that starts with a plain value keeps it ("15, then 15 + 6 = 21" is 15 too); a chained equation
    reads its first result ("24 - 9 = 15 + 6 = 21" is 15). A trailing period or unmatched bracket is
    dropped.
    """
    line = _first_line(raw)
    if "=" in line:
        first_clause = _CLAUSE_END_RE.split(line, maxsplit=1)[0]
        if "=" not in first_clause and _STARTS_WITH_VALUE_RE.match(first_clause):
            line = first_clause
        else:
            result = _CLAUSE_END_RE.split(line.split("=", 1)[1], maxsplit=1)[0].split("=", 1)[0]
            lead = _LEADING_VALUE_RE.match(result) or _VALUE_THEN_NUMBERED_WORDS_RE.match(result)
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
    share: bool = True,
) -> ProbeOutcome:
    """Ask every sub-question of every path in one batch of short greedy completions: N x K at most, since
    a sub-question that restates the question is not asked (`skipped`) and equal probes (paths with the
    same working) are sent once. `share=False` asks all N x K (for comparison: the answers are the same)."""
    grid = prompts.probe_prompts(question, path_texts, sub_questions, system_prompt, images)
    asked = [not skip for skip in skipped(question, sub_questions)] if share else [True] * len(sub_questions)
    flat = [p for k, row in enumerate(grid) if asked[k] for p in row]
    unique, where = distinct(flat, prompt_key if share else id)
    spec = SampleSpec(n=1, temperature=0.0, max_tokens=max_tokens, stop=prompts.probe_stop)
    results = await engine.generate_many(unique, spec, request_id) if unique else []
    read: list[tuple[str, str]] = []
    for result in results:
        completion = result.completions[0] if result.completions else None
        # A probe cut at its token limit never reached the end of its line: the value in it may be
        # cut too ("287 + 76 = 44" for 443), so it is left unanswered rather than read wrong, unless it
        # is a first equation's result with more text after it.
        truncated = completion is not None and completion.truncated
        usage.add(result.prompt_tokens, result.generated_tokens, result.cached_prompt_tokens, int(truncated))
        short = "" if completion is None else _cut_short(completion.text) if truncated else _short(completion.text)
        answer = normalize_answer(short) if short else None
        read.append((answer.normalized if answer is not None else "", short))
    answers: list[list[str]] = []
    surface: list[dict[str, str]] = []
    num_paths = len(path_texts)
    position = iter(where)
    for k in range(len(sub_questions)):
        row: list[str] = []
        forms: dict[str, str] = {}
        for _ in range(num_paths if asked[k] else 0):
            norm, short = read[next(position)]
            row.append(norm)
            if norm and norm not in forms:
                forms[norm] = short
        answers.append(row or [""] * num_paths)
        surface.append(forms)
    return ProbeOutcome(grid, answers, surface, asked, len(unique))


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
    logits: dict[tuple[int, int], dict[str, float]] = {}
    for (k, i, cand), score in zip(plan.index, await _score_distinct(engine, plan.items, request_id, usage)):
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
        if not probes.was_asked(k):
            continue
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
    logprobs: dict[tuple[int, int], dict[str, float]] = {}
    for (k, i, cand), score in zip(plan.index, await _score_distinct(engine, plan.items, request_id, usage)):
        logprobs.setdefault((k, i), {})[cand] = score.logprob_sum
    # Equal likelihoods go to the smaller candidate string, never to the order they were planned in.
    best = {key: min(by_cand, key=lambda c, b=by_cand: (-b[c], c)) for key, by_cand in logprobs.items()}
    answers = [list(row) for row in probes.answers]
    surface = [dict(forms) for forms in probes.surface]
    for (k, i), cand in best.items():
        answers[k][i] = cand
        surface[k].setdefault(cand, cand)
    return replace(probes, answers=answers, surface=surface)


async def _score_distinct(
    engine: Engine, items: Sequence[ScoreItem], request_id: str, usage: PhaseUsage
) -> list[ScoreResult]:
    """Scores of all items, each distinct one scored once (usage counts what the engine did)."""
    unique, where = distinct(items, score_key)
    scores = await engine.score(unique, request_id)
    for score in scores:
        usage.add(score.prompt_tokens, 0, score.cached_prompt_tokens)
    return [scores[j] for j in where]
