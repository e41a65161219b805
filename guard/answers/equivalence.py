"""When two answers mean the same, and grouping a path's answers into clusters of equivalent ones."""

from __future__ import annotations

from collections.abc import Sequence

from guard.answers.answer import Answer, AnswerKind, number_value
from guard.answers.symbolic import matches_number, math_equivalent


def answers_equivalent(a: Answer, b: Answer) -> bool:
    if _units_conflict(a.unit, b.unit):
        return False
    if a.kind is b.kind and a.normalized == b.normalized:
        return True
    if a.kind is b.kind:
        if a.kind is AnswerKind.NUMBER:
            va, vb = number_value(a), number_value(b)
            return va is not None and va == vb
        if a.kind is AnswerKind.MATH:
            return math_equivalent(a, b)
        return False
    if {a.kind, b.kind} == {AnswerKind.NUMBER, AnswerKind.MATH}:
        number, expr = (a, b) if a.kind is AnswerKind.NUMBER else (b, a)
        value = number_value(number)
        return value is not None and matches_number(expr, value)
    return False


def cluster_answers(answers: Sequence[Answer | None]) -> list[list[int]]:
    """Group indices of equivalent answers; None answers are in no cluster; clusters ordered by first appearance."""
    clusters: list[list[int]] = []
    representatives: list[Answer] = []
    # The first unit seen in each cluster: a unit-less representative ("5") matches both "5 km" and
    # "5 m", which must still not end up in one cluster through it.
    cluster_units: list[str | None] = []
    # Identical answers land where their first copy did, so math-verify runs once per distinct
    # answer instead of once per sample. The unit is part of the identity: "5 km" and "5 m" share
    # their normalized "5".
    placed: dict[tuple[AnswerKind, str, str | None], int] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        key = (answer.kind, answer.normalized, answer.unit)
        cluster = placed.get(key)
        if cluster is None:
            cluster = next(
                (
                    c
                    for c, rep in enumerate(representatives)
                    if not _units_conflict(cluster_units[c], answer.unit) and answers_equivalent(rep, answer)
                ),
                None,
            )
            if cluster is None:
                cluster = len(clusters)
                clusters.append([])
                representatives.append(answer)
                cluster_units.append(None)
            cluster_units[cluster] = cluster_units[cluster] or answer.unit
            placed[key] = cluster
        clusters[cluster].append(index)
    return clusters


def _units_conflict(a: str | None, b: str | None) -> bool:
    # Only two known, different units conflict: a bare "5" may be the "5 km" the question asked for.
    return a is not None and b is not None and a != b
