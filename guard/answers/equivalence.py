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
    """Group indices of equivalent answers; None answers are in no cluster.

    Clusters are ordered by first appearance and list their indices in order, but which answers share
    a cluster never depends on the order of `answers`: equivalence need not be transitive (a unit-less
    "5" matches both "5 km" and "5 m"; math-verify compares within a tolerance), so a greedy pass in
    path order would let the order decide. Distinct answers are placed in a canonical order instead
    (answers with a unit first, then by how many paths gave them, then by their text). A unit-less
    answer that fits clusters of several units joins the one more paths gave; when they tie (two
    "5 km", two "5 m" and a bare "5"), the bare "5" could be either, so it is an answer of its own.
    """
    groups: dict[tuple[AnswerKind, str, str | None], list[int]] = {}
    for index, answer in enumerate(answers):
        if answer is not None:
            groups.setdefault(_identity(answer), []).append(index)
    members: list[list[int]] = []
    representatives: list[Answer] = []
    unit_paths: list[int] = []  # each cluster's paths that gave a unit
    for key in sorted(groups, key=lambda k: (k[2] is None, -len(groups[k]), k[0].value, k[1], k[2] or "")):
        answer = _given(answers[groups[key][0]])
        fits = [c for c, rep in enumerate(representatives) if answers_equivalent(rep, answer)]
        if answer.unit is None:
            fits = _unit_less_fits(fits, representatives, unit_paths)
        if fits:
            members[fits[0]].extend(groups[key])
            if answer.unit is not None:
                unit_paths[fits[0]] += len(groups[key])
        else:
            members.append(list(groups[key]))
            representatives.append(answer)
            unit_paths.append(len(groups[key]) if answer.unit is not None else 0)
    return sorted((sorted(m) for m in members), key=lambda m: m[0])


def _unit_less_fits(fits: list[int], representatives: list[Answer], unit_paths: list[int]) -> list[int]:
    """The clusters a unit-less answer may join, best first, given those it is equivalent to."""
    with_unit = [c for c in fits if representatives[c].unit is not None]
    if not with_unit:
        return fits
    most = max(unit_paths[c] for c in with_unit)
    leaders = [c for c in with_unit if unit_paths[c] == most]
    if len({representatives[c].unit for c in leaders}) == 1:
        return leaders
    return [c for c in fits if representatives[c].unit is None]


def representative(answers: Sequence[Answer | None], cluster: Sequence[int]) -> int:
    """The index of the answer that names a cluster, whatever the order of the paths: an answer with a
    unit before one without ("5 km" over "5"), then the most common, then the smallest by text."""
    counts: dict[tuple[AnswerKind, str, str | None], int] = {}
    for i in cluster:
        key = _identity(_given(answers[i]))
        counts[key] = counts.get(key, 0) + 1

    def rank(i: int) -> tuple:
        a = _given(answers[i])
        return (a.unit is None, -counts[_identity(a)], a.kind.value, a.normalized, a.unit or "", a.raw, i)

    return min(cluster, key=rank)


def cluster_name(answers: Sequence[Answer | None], cluster: Sequence[int]) -> tuple[str, str]:
    """An order-free name for a cluster, for ties: its smallest (normalized answer, unit)."""
    return min((_given(answers[i]).normalized, _given(answers[i]).unit or "") for i in cluster)


def _identity(answer: Answer) -> tuple[AnswerKind, str, str | None]:
    # Equal identities are equivalent answers. The unit is part of it: "5 km" and "5 m" share "5".
    return (answer.kind, answer.normalized, answer.unit)


def _given(answer: Answer | None) -> Answer:
    if answer is None:
        raise ValueError("a cluster holds only answered paths")
    return answer


def _units_conflict(a: str | None, b: str | None) -> bool:
    # Only two known, different units conflict: a bare "5" may be the "5 km" the question asked for.
    return a is not None and b is not None and a != b
