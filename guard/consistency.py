"""TRACE consistency over an Auxiliary Reasoning Set: agreement per sub-question, support and FFS per path.

Every quantity here is invariant under a permutation of the paths: a mode exists only as a strict
plurality, thresholds are strict, and a missing probe answer leaves the denominators instead of
counting as disagreement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# Candidate distribution of one path on one sub-question: normalised answer -> probability.
SoftAnswer = dict[str, float]

# Fewest answers a sub-question needs before its answers can be said to agree or disagree.
MIN_ANSWERS_FOR_MODE = 2
# A sub-question is an echo of the final answer when more than this share of the paths that answered
# it gave their own final answer.
ECHO_SHARE = 0.5
# Word overlap (Jaccard) at which a sub-question restates a question of the problem text.
RESTATEMENT_OVERLAP = 0.8


@dataclass(frozen=True)
class ArsAnalysis:
    sub_questions: list[str]
    # path_answers[k][i]: path i's normalised answer to sub-question k ("" when unanswered).
    path_answers: list[list[str]]
    # modal[k]: the strict plurality of the non-empty answers to sub-question k; "" when there is none
    # (nobody or only one path answered, or the top answers are tied).
    modal: list[str]
    # agreement[k]: share of the paths that answered k giving its most common answer (0 when fewer
    # than two answered). Missing answers are not in the denominator.
    agreement: list[float]
    # soft_agreement[k]: mean probability the answering paths put on modal[k] (the hard agreement
    # when the step was not scored or has no mode).
    soft_agreement: list[float]
    # answered[k]: how many paths gave a readable answer to sub-question k.
    answered: list[int]
    # echo[k]: sub-question k restates the question, or most paths answer it with their own final
    # answer; an echo says nothing the vote does not, so it is left out of support and FFS.
    echo: list[bool]
    # support[i]: share of path i's informative steps (answered, not an echo, with a mode) on which it
    # matches the mode, soft when scored; None when path i has no informative step.
    support: list[float | None]
    # first_failure_step[i]: 1-based index of the first informative sub-question whose mode is well
    # supported (agreement above the threshold) that path i answered differently; None when none.
    first_failure_step: list[int | None]
    # soft[k][i]: path i's distribution over the candidates of sub-question k, when scored.
    soft: list[list[SoftAnswer | None]] | None = None
    # asked[k]: sub-question k was put to the paths (False: it restates the question and was not probed;
    # it is an echo). One entry per sub-question.
    asked: list[bool] = field(default_factory=list)

    @property
    def num_paths(self) -> int:
        return len(self.path_answers[0]) if self.path_answers else 0

    @property
    def mean_agreement(self) -> float:
        """Mean hard agreement over the sub-questions that are not echoes (0.0 when none is left)."""
        kept = [a for a, echo in zip(self.agreement, self.echo) if not echo]
        return sum(kept) / len(kept) if kept else 0.0

    @property
    def informative(self) -> bool:
        """Whether any path has a step that can back or contradict it (else the ARS adds nothing)."""
        return any(s is not None for s in self.support)

    @property
    def num_echo(self) -> int:
        return sum(self.echo)

    def filled_support(self) -> list[float]:
        """Support with the gaps filled: a path none of whose steps could be judged gets the mean
        support of the others (unknown neither backs nor contradicts it); 1.0 each when no path has
        an informative step."""
        known = [s for s in self.support if s is not None]
        neutral = sum(known) / len(known) if known else 1.0
        return [s if s is not None else neutral for s in self.support]

    def agreement_among(self, paths: Sequence[int]) -> float | None:
        """Mean over non-echo sub-questions of how well `paths` agree with each other.

        For the winning answer cluster this says whether paths that agree on the answer also agree on
        the steps; a low value is TRACE's silent failure. A step that fewer than two of `paths`
        answered shows nothing either way and is skipped; None when no step is left.
        """
        shares = []
        for k, answers in enumerate(self.path_answers):
            if self.echo[k]:
                continue
            chosen = [answers[i] for i in paths if answers[i]]
            if len(chosen) >= MIN_ANSWERS_FOR_MODE:
                shares.append(_top_count(chosen) / len(chosen))
        return sum(shares) / len(shares) if shares else None


def _counts(answers: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in answers:
        if a:
            counts[a] = counts.get(a, 0) + 1
    return counts


def _top_count(answers: Sequence[str]) -> int:
    counts = _counts(answers)
    return max(counts.values()) if counts else 0


def strict_mode(answers: Sequence[str]) -> tuple[str, int]:
    """The strict plurality of the non-empty answers and its count; ("", top count) on a tie.

    A tie has no mode on purpose: picking one of the tied answers would let path order decide.
    """
    counts = _counts(answers)
    if not counts:
        return "", 0
    top = max(counts.values())
    leaders = [a for a, c in counts.items() if c == top]
    return (leaders[0], top) if len(leaders) == 1 else ("", top)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def restates(sub_question: str, question: str) -> bool:
    """Whether the sub-question asks (nearly word for word) one of the questions of the problem text."""
    sub = _words(sub_question)
    if not sub or not question:
        return False
    # The whole text, and each sentence of it, since the asked question is usually its last sentence.
    candidates = [question, *re.split(r"(?<=[.?!])\s+", question)]
    for text in candidates:
        words = _words(text)
        if words and len(sub & words) / len(sub | words) >= RESTATEMENT_OVERLAP:
            return True
    return False


def _is_echo(sub_question: str, question: str, answers: Sequence[str], final_answers: Sequence[str]) -> bool:
    if restates(sub_question, question):
        return True
    answered = [(a, f) for a, f in zip(answers, final_answers) if a and f]
    own_final = sum(1 for a, f in answered if a == f)
    return bool(answered) and own_final > ECHO_SHARE * len(answered)


def analyze_ars(
    sub_questions: Sequence[str],
    path_answers: Sequence[Sequence[str]],
    soft: Sequence[Sequence[SoftAnswer | None]] | None = None,
    *,
    final_answers: Sequence[str] | None = None,
    question: str = "",
    ffs_threshold: float = 0.5,
    asked: Sequence[bool] = (),
) -> ArsAnalysis:
    """Compute every TRACE consistency metric from the probe answers (and optional soft scores).

    `path_answers[k][i]` is path i's normalised answer to sub-question k ("" when unanswered).
    `soft[k][i]`, when given, is path i's probability distribution over the candidate answers of
    sub-question k; it replaces the 0/1 match in soft agreement and support (FFS stays on the hard
    answers). `final_answers[i]` (normalised, "" when none) and `question` find echo sub-questions.
    `asked[k]` False marks sub-question k as not probed (it restates the question: an echo either way).
    """
    if len(path_answers) != len(sub_questions):
        raise ValueError("path_answers must have one row per sub-question")
    if asked and len(asked) != len(sub_questions):
        raise ValueError("asked must have one entry per sub-question")
    num_paths = len(path_answers[0]) if path_answers else 0
    finals = list(final_answers) if final_answers is not None else [""] * num_paths
    if len(finals) != num_paths:
        raise ValueError("final_answers must have one entry per path")
    steps = [
        _analyze_step(sub_questions[k], answers, soft[k] if soft is not None else None, question, finals)
        for k, answers in enumerate(path_answers)
    ]
    match = [step.match for step in steps]
    agreement = [step.agreement for step in steps]
    modal = [step.mode for step in steps]
    return ArsAnalysis(
        sub_questions=list(sub_questions),
        path_answers=[list(a) for a in path_answers],
        modal=modal,
        agreement=agreement,
        soft_agreement=[step.soft_agreement for step in steps],
        answered=[step.answered for step in steps],
        echo=[step.echo for step in steps],
        support=_support(match, num_paths),
        first_failure_step=_first_failures(match, path_answers, modal, agreement, ffs_threshold),
        soft=[list(row) for row in soft] if soft is not None else None,
        asked=list(asked) if asked else [True] * len(sub_questions),
    )


@dataclass(frozen=True)
class _Step:
    """One sub-question's share of an ArsAnalysis (see there for the fields)."""

    mode: str
    agreement: float
    soft_agreement: float
    answered: int
    echo: bool
    # match[i]: how much path i backs the mode, in [0, 1]; None when the step says nothing about
    # path i (no mode, an echo, or path i did not answer).
    match: list[float | None]


def _analyze_step(
    sub_question: str,
    answers: Sequence[str],
    soft_row: Sequence[SoftAnswer | None] | None,
    question: str,
    finals: Sequence[str],
) -> _Step:
    if len(answers) != len(finals):
        raise ValueError("every sub-question needs one answer per path")
    n_answered = sum(1 for a in answers if a)
    mode, top = strict_mode(answers) if n_answered >= MIN_ANSWERS_FOR_MODE else ("", 0)
    is_echo = _is_echo(sub_question, question, answers, finals)
    row = _match_row(answers, mode, soft_row)
    hard = top / n_answered if n_answered >= MIN_ANSWERS_FOR_MODE else 0.0
    scored = [m for m in row if m is not None]
    soft_agreement = sum(scored) / len(scored) if scored and soft_row is not None else hard
    match = [None if is_echo else m for m in row]
    return _Step(mode, hard, soft_agreement, n_answered, is_echo, match)


def _match_row(
    answers: Sequence[str], mode: str, soft_row: Sequence[SoftAnswer | None] | None
) -> list[float | None]:
    """How much each path backs `mode`: its probability on it when scored, else 0/1 on its answer."""
    row: list[float | None] = []
    for i, answer in enumerate(answers):
        dist = soft_row[i] if soft_row is not None else None
        if not mode or not answer:
            row.append(None)
        elif dist:
            row.append(float(dist.get(mode, 0.0)))
        else:
            row.append(1.0 if answer == mode else 0.0)
    return row


def _support(match: Sequence[Sequence[float | None]], num_paths: int) -> list[float | None]:
    support: list[float | None] = []
    for i in range(num_paths):
        steps = [row[i] for row in match if row[i] is not None]
        support.append(sum(steps) / len(steps) if steps else None)
    return support


def _first_failures(
    match: Sequence[Sequence[float | None]],
    path_answers: Sequence[Sequence[str]],
    modal: Sequence[str],
    agreement: Sequence[float],
    ffs_threshold: float,
) -> list[int | None]:
    first_failure: list[int | None] = []
    for i in range(len(path_answers[0]) if path_answers else 0):
        ffs = None
        for k in range(len(match)):
            # A departure only counts against a mode the paths actually agree on (strictly more than
            # the threshold, so an even split is no mode to fail against). It is judged on the path's
            # own (hard) answer, so the FFS always agrees with the table a user reads.
            if match[k][i] is not None and agreement[k] > ffs_threshold and path_answers[k][i] != modal[k]:
                ffs = k + 1
                break
        first_failure.append(ffs)
    return first_failure
