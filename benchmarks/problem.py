"""One evaluation problem: question, gold answer, optional gold ARS and inline images."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str
    # Gold Auxiliary Reasoning Set (sub-question, gold value), where the data has one.
    sub_questions: tuple[str, ...] = ()
    sub_answers: tuple[str, ...] = ()
    # Inline images (bytes, MIME type) for visual problems.
    images: tuple[tuple[bytes, str], ...] = field(default=(), repr=False)
