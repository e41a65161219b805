"""Reading a reasoning path's final answer, its working, and the values its working wrote."""

from __future__ import annotations

import re

from guard.answers.answer import Answer, AnswerKind
from guard.answers.normalize import normalize_answer, normalize_fast, normalize_text, option_prefix
from guard.answers.symbolic import looks_like_math, normalize_math
from guard.answers.values import VALUE_IN_TEXT_RE, last_number, values_in_text, written_values
from guard.answers.wrappers import matching_brace, strip_wrappers

# Few-shot completion models keep going with the next exemplar; only the text before it is ours.
_CONTINUATION_RE = re.compile(r"^[ \t>*_#]*question\s*\d*\s*[:：]", re.IGNORECASE | re.MULTILINE)

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASH_LINE_RE = re.compile(r"^[ \t]*####[ \t]*(.*)$", re.MULTILINE)
_MARKER_RE = re.compile(
    r"(?P<final>\bfinal\s+answer\b[\s*_]*(?P<final_sep>is\b|[:=])?)"
    r"|(?P<answer>\banswer\b(?:\s+to\s+[^.:\n]{1,80}?)?[\s*_]*(?P<answer_sep>is\b|[:=]))"
    r"|(?P<option>\b(?:correct|right|best)\s+(?:option|choice)\s+is\b)",
    re.IGNORECASE,
)

# "not 5, it is 6": a value the answer is said not to be, then the one it is.
_NEGATION_RE = re.compile(r"\s*(?:not|n['\u2019]t)\b", re.IGNORECASE)
_NEGATION_TURN_RE = re.compile(r"[,;](?!\d)|\s+(?:but|rather|instead)\b|\s+[-\u2013\u2014]+\s", re.IGNORECASE)
_TURN_FILLER_RE = re.compile(
    r"\s*(?:(?:but|rather|instead)\s+)?(?:(?:it|that|the\s+answer)\s*(?:is|['\u2019]s)\s+)?"
    r"(?:(?:actually|rather|instead)\s+)?",
    re.IGNORECASE,
)
_DIGIT_RE = re.compile(r"\d")

_CLAUSE_END_RE = re.compile(r"\.\s|[;!?]\s|,\s|\s(?:because|since|as|so|which|but)\s", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.\s|[;!?]\s")

_MAX_TEXT_WORDS = 10

# "the answer is correct" judges an earlier answer rather than stating one.
_NOT_AN_ANSWER_START = frozenset(
    "correct incorrect right wrong reasonable plausible valid invalid consistent clear unclear "
    "not as that this below above given follows".split()
)


def extract_answer(text: str) -> Answer | None:
    """Final answer of a reasoning path, or None when none is extractable."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = _cut_continuation(text)
    explicit = _explicit_answer(text)
    if explicit is not None:
        return explicit[1]
    return last_number(text)


def working_text(text: str) -> str:
    """A path's working: its text up to, not including, the statement its final answer is read from
    ("Answer: 21", "the answer is 21", "\\boxed{21}", "#### 21") and anything after it.

    Always a prefix of `text`, so a prompt built on it continues the path's own tokens. The whole line
    of the statement goes when only words precede its marker ("So the answer is 21", "**Final Answer:**
    21"); working on that line stays ("15 + 6 = 21. Answer: 21" keeps "15 + 6 = 21."). Without an
    explicit statement (the answer is the last number, or there is none), the text before any invented
    next exemplar ("Question: ...").
    """
    if not isinstance(text, str):
        return ""
    cut = _cut_continuation(text)
    explicit = _explicit_answer(cut)
    if explicit is None:
        return cut
    start = explicit[0]
    line_start = cut.rfind("\n", 0, start) + 1
    if not _DIGIT_RE.search(cut, line_start, start):
        return cut[:line_start]
    return cut[:start].rstrip(" \t")


def path_values(text: str) -> list[str]:
    """The distinct normalised values a path wrote in its working (`working_text`): the operands and
    results of its steps and the numbers it stated, in order of first appearance."""
    return list(dict.fromkeys(a.normalized for a in written_values(working_text(text))))


def _cut_continuation(text: str) -> str:
    for match in _CONTINUATION_RE.finditer(text):
        # A "Question:" heading before any reasoning is the model restating its own question.
        if text[: match.start()].strip():
            return text[: match.start()]
    return text


# Each candidate carries its source because sources differ in how far they can be trusted:
# "boxed" and "colon" ("Answer:") may state a text answer, "is" ("the answer is ...") may not when
# it only judges ("... is correct"), "hash" and "bare" ("final answer" without ":"/"is") only count
# when they hold a number, an option or a formula.
def _explicit_candidates(text: str) -> list[tuple[int, str, str]]:
    candidates: list[tuple[int, str, str]] = []
    for match in _BOXED_RE.finditer(text):
        close = matching_brace(text, match.end() - 1)
        # An unclosed box is a truncated generation; its content is not a finished answer.
        if close is not None:
            candidates.append((match.start(), "boxed", text[match.end() : close]))
    for match in _HASH_LINE_RE.finditer(text):
        candidates.append((match.start(), "hash", match.group(1)))
    for match in _MARKER_RE.finditer(text):
        separator = match.group("final_sep") or match.group("answer_sep")
        if match.group("option") is not None:
            source = "is"
        elif separator is None:
            source = "bare"
        else:
            source = "is" if separator.lower() == "is" else "colon"
        candidates.append((match.start(), source, _rest_of_line(text, match.end())))
    return candidates


def _explicit_answer(text: str) -> tuple[int, Answer] | None:
    """The last explicit answer statement that reads as an answer: (its offset in `text`, the answer)."""
    for start, source, span in sorted(_explicit_candidates(text), key=lambda c: c[0], reverse=True):
        answer = _answer_from_span(span, source)
        if answer is not None:
            return start, answer
    return None


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    line = text[start:] if end < 0 else text[start:end]
    if line.strip(" \t*_:"):
        return line
    # "**Final Answer:**" on its own line is followed by the answer on the next non-empty line.
    for following in text[start:].splitlines()[1:]:
        if following.strip(" \t*_:"):
            return following
    return ""


def _after_negations(span: str) -> str | None:
    """What a statement says the answer is once its "not X" parts are skipped; None when it only
    says what the answer is not."""
    # "not 5, it is 6": the answer is what follows the turn (a loop, not recursion: "not 5, not 6,
    # ..." may repeat). "not 5" alone only says what the answer is not; "Not enough information"
    # is still a text answer.
    while (negation := _NEGATION_RE.match(span)) is not None:
        turn = _NEGATION_TURN_RE.search(span, negation.end())
        if turn is None:
            if VALUE_IN_TEXT_RE.search(span):
                return None
            break
        span = span[turn.end() :]
        span = span[_TURN_FILLER_RE.match(span).end() :]
    return span


def _answer_from_span(span: str, source: str) -> Answer | None:
    span = _after_negations(span)
    if span is None:
        return None
    raw = span.strip().strip("*_").strip()
    s = strip_wrappers(raw)
    if not s:
        return None
    answer = normalize_fast(raw, s)
    if answer is not None:
        return answer
    if source == "boxed":
        # Whatever the model boxed is its answer, prose included.
        return normalize_answer(raw)

    answer = option_prefix(None, s)
    if answer is not None:
        return answer

    if "=" in s:
        # "5 + 7 = 12": the result is what follows the last equals sign.
        tail = s.rsplit("=", 1)[1]
        answer = normalize_fast(tail.strip(), strip_wrappers(tail))
        if answer is not None and answer.kind is AnswerKind.NUMBER:
            return answer

    sentence = _SENTENCE_END_RE.split(s, maxsplit=1)[0].strip()
    if sentence != s:
        answer = normalize_fast(sentence, strip_wrappers(sentence))
        if answer is not None and answer.kind is not AnswerKind.TEXT:
            return answer
    if looks_like_math(sentence):
        answer = normalize_math(sentence, strip_wrappers(sentence))
        if answer is not None:
            return answer

    answer = next(values_in_text(sentence), None)
    if answer is not None:
        return answer

    if source in ("hash", "bare"):
        # "#### Step 3" headings and "the final answer will be..." prose are not text answers.
        return None
    clause = _CLAUSE_END_RE.split(" " + sentence + " ", maxsplit=1)[0].strip()
    words = clause.split()
    if not words or len(words) > _MAX_TEXT_WORDS:
        return None
    if source == "is" and words[0].lower().strip(".,:;") in _NOT_AN_ANSWER_START:
        return None
    return normalize_text(clause, strip_wrappers(clause))
