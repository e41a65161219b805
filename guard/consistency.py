"""TRACE consistency over an Auxiliary Reasoning Set: agreement per sub-question, support and FFS per path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

# Candidate distribution of one path on one sub-question: normalised answer -> probability.
SoftAnswer = dict[str, float]


@dataclass
class ArsAnalysis:
    sub_questions: list[str]
    # path_answers[k][i]: path i's normalised answer to sub-question k ("" when unanswered).
    path_answers: list[list[str]]
    # modal[k]: most common non-empty answer to sub-question k ("" when nobody answered).
    modal: list[str]
    # agreement[k]: share of all paths whose answer equals modal[k].
    agreement: list[float]
    # soft_agreement[k]: mean probability the paths put on modal[k] (equals agreement without scores).
    soft_agreement: list[float]
    # support[i]: agreement-weighted share of sub-questions on which path i matches the mode.
    support: list[float]
    # first_failure_step[i]: 1-based index of the first well-supported sub-question path i departs
    # from; None when it never departs.
    first_failure_step: list[int | None]
    # soft[k][i]: path i's distribution over the candidates of sub-question k, when scored.
    soft: list[list[SoftAnswer | None]] | None = None

    @property
    def mean_agreement(self) -> float:
        return sum(self.agreement) / len(self.agreement) if self.agreement else 0.0

    def agreement_among(self, paths: Sequence[int]) -> float:
        """Mean over sub-questions of how well `paths` agree with each other (mode taken among them).

        For the winning answer cluster this says whether paths that agree on the answer also agree on
        the steps; a low value is TRACE's silent failure.
        """
        if not paths or not self.sub_questions:
            return 0.0
        total = 0.0
        for answers in self.path_answers:
            chosen = [answers[i] for i in paths]
            mode, count = _mode(chosen)
            total += count / len(chosen) if mode else 0.0
        return total / len(self.path_answers)


def _mode(answers: Sequence[str]) -> tuple[str, int]:
    """Most common non-empty answer and its count; ties go to the first to appear."""
    counts: dict[str, int] = {}
    for a in answers:
        if a:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return "", 0
    best = max(counts.items(), key=lambda kv: kv[1])  # max keeps the first of equal counts
    return best


def analyze_ars(
    sub_questions: Sequence[str],
    path_answers: Sequence[Sequence[str]],
    soft: Sequence[Sequence[SoftAnswer | None]] | None = None,
    *,
    ffs_threshold: float = 0.5,
) -> ArsAnalysis:
    """Compute every TRACE consistency metric from the probe answers (and optional soft scores).

    `path_answers[k][i]` is path i's normalised answer to sub-question k. `soft[k][i]`, when given,
    is path i's probability distribution over the candidate answers of sub-question k; it replaces
    the 0/1 match in soft agreement and support (FFS stays on the hard answers).
    """
    if len(path_answers) != len(sub_questions):
        raise ValueError("path_answers must have one row per sub-question")
    num_paths = len(path_answers[0]) if path_answers else 0
    modal: list[str] = []
    agreement: list[float] = []
    soft_agreement: list[float] = []
    # match[k][i]: how much path i backs the mode of sub-question k, in [0, 1].
    match: list[list[float]] = []
    for k, answers in enumerate(path_answers):
        if len(answers) != num_paths:
            raise ValueError("every sub-question needs one answer per path")
        mode, count = _mode(answers)
        modal.append(mode)
        agreement.append(count / num_paths if num_paths else 0.0)
        row: list[float] = []
        for i, answer in enumerate(answers):
            dist = soft[k][i] if soft is not None else None
            if not mode:
                row.append(0.0)
            elif dist:
                row.append(float(dist.get(mode, 0.0)))
            else:
                row.append(1.0 if answer == mode else 0.0)
        match.append(row)
        soft_agreement.append(sum(row) / num_paths if num_paths else 0.0)

    weight_total = sum(agreement)
    support = [
        sum(agreement[k] * match[k][i] for k in range(len(sub_questions))) / weight_total if weight_total else 0.0
        for i in range(num_paths)
    ]
    first_failure: list[int | None] = []
    for i in range(num_paths):
        ffs = None
        for k in range(len(sub_questions)):
            # A departure only counts against a mode the paths actually agree on. It is judged on
            # the path's own (hard) answer, so the FFS always agrees with the table a user reads.
            if agreement[k] >= ffs_threshold and path_answers[k][i] != modal[k]:
                ffs = k + 1
                break
        first_failure.append(ffs)
    return ArsAnalysis(
        sub_questions=list(sub_questions),
        path_answers=[list(a) for a in path_answers],
        modal=modal,
        agreement=agreement,
        soft_agreement=soft_agreement,
        support=support,
        first_failure_step=first_failure,
        soft=[list(row) for row in soft] if soft is not None else None,
    )
