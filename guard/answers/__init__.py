"""Final answers of sampled reasoning paths: extraction, canonicalisation and equivalence clustering."""

from guard.answers.answer import Answer, AnswerKind
from guard.answers.equivalence import answers_equivalent, cluster_answers, cluster_name, representative
from guard.answers.extract import extract_answer, path_values, working_text
from guard.answers.normalize import normalize_answer
from guard.answers.values import written_values

__all__ = [
    "Answer",
    "AnswerKind",
    "answers_equivalent",
    "cluster_answers",
    "cluster_name",
    "extract_answer",
    "normalize_answer",
    "path_values",
    "representative",
    "working_text",
    "written_values",
]
