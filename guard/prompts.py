"""Prompt templates of the model profile: reasoning paths, ARS generation and sub-question probes."""

from __future__ import annotations

import enum
import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from guard.answers import working_text
from guard.engine import Prompt
from guard.errors import InvalidArgumentError

logger = logging.getLogger(__name__)


class PromptStyle(enum.Enum):
    # The model's chat template with an instruction (instruction-tuned and vision-language models).
    CHAT = "chat"
    # A plain few-shot completion prompt; small models reason far better this way (see DESIGN.md).
    FEWSHOT = "fewshot"


class ProbeFormat(enum.Enum):
    """How a probe puts a sub-question to a path."""

    # The path's whole text, answer line included, under a probe header of its own (few-shot) or after
    # the question (chat): the engine re-prefills every path, and the path's final answer sits right
    # before the sub-question.
    LEGACY = "legacy"
    # The path's own sampling prompt and text up to (not including) its answer line, then the
    # sub-question: byte for byte what was sampled, so the engine's prefix cache holds all of it but
    # the sub-question, and the path's final answer is out of view. The few-shot sampling prompt
    # demonstrates sub-question lines after each example's answer (sampling stops before writing one).
    CONTINUE = "continue"


# Worked examples written for this project (not taken from any evaluation set).
_EXAMPLES = [
    (
        "A baker makes 24 muffins and sells 9 of them. Then he bakes 6 more. How many muffins does he have now?",
        "He has 24 - 9 = 15 muffins left after selling. Then he has 15 + 6 = 21 muffins.",
        "21",
        [("How many muffins are left after selling?", "15"), ("How many muffins does he have now?", "21")],
    ),
    (
        "Lily has 9 stickers and her friend gives her 4 more. How many stickers does Lily have?",
        "Lily has 9 + 4 = 13 stickers.",
        "13",
        [("How many stickers does Lily have at first?", "9"), ("How many stickers does Lily have?", "13")],
    ),
    (
        "A box has 6 rows with 4 eggs in each row. How many eggs are in the box?",
        "There are 6 * 4 = 24 eggs in the box.",
        "24",
        [("How many rows are in the box?", "6"), ("How many eggs are in the box?", "24")],
    ),
]

# The continue format's examples, whose sub-question lines teach every probe of a request how to answer.
# Each short answer of a computed value writes its calculation ("3 * 8 = 24"), read as its result: a
# probe that copies a number instead of working the step out answers with the step's first operand
# ("7" for the "7 * 7 = 49" of "7 * 7 - 17 = 49 - 17 = 32"), one that writes the calculation reads its
# result. And the egg example's "How many rows are in the box?" (a number given in the question) gave
# way to a compound line that asks for each part. Chosen on generated problems (benchmarks/README.md,
# "Probe examples" and "Short answers that calculate").
_CONTINUE_EXAMPLES = [
    (
        _EXAMPLES[0][0], _EXAMPLES[0][1], _EXAMPLES[0][2],
        [("How many muffins are left after selling?", "24 - 9 = 15"),
         ("How many muffins does he have now?", "15 + 6 = 21")],
    ),
    (
        _EXAMPLES[1][0], _EXAMPLES[1][1], _EXAMPLES[1][2],
        [("How many stickers does Lily have at first?", "9"), ("How many stickers does Lily have?", "9 + 4 = 13")],
    ),
    (
        "A shop sells 3 shirts for 8 dollars each and 2 hats for 5 dollars each. How many dollars does the shop get?",
        "The shop gets 3 * 8 + 2 * 5 = 24 + 10 = 34 dollars.",
        "34",
        [
            ("How many dollars does the shop get for the shirts?", "3 * 8 = 24"),
            ("How many dollars does the shop get for the hats?", "2 * 5 = 10"),
            ("How many dollars does the shop get?", "24 + 10 = 34"),
        ],
    ),
]

ANSWER_INSTRUCTION = (
    "Solve the problem step by step. End with a last line of the form 'Answer: <answer>', "
    "where <answer> is only the final value (a number, an option letter or a short phrase)."
)
ARS_INSTRUCTION = (
    "Break the question into at most {max_k} short sub-questions whose answers (each a number or a "
    "single word) lead step by step to the final answer. Do not repeat the question itself. "
    'Reply with JSON: {{"sub_questions": [...]}}.'
)
# The probe lines of the few-shot formats: a sub-question, then its short answer.
SUB_QUESTION_MARKER = "Sub-question:"
SHORT_ANSWER_MARKER = "Short answer:"
PROBE_INSTRUCTION = (
    "Using only the solution above, answer this sub-question with a short value (a number or a single "
    "word), nothing else: {sub_question}"
)


def ars_json_schema(max_k: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "sub_questions": {
                "type": "array",
                "items": {"type": "string", "minLength": 3, "maxLength": 200},
                "minItems": 1,
                "maxItems": max_k,
            }
        },
        "required": ["sub_questions"],
        "additionalProperties": False,
    }


class RenderChat(Protocol):
    """The model's chat template applied to OpenAI-style messages (`Engine.render_chat`)."""

    def __call__(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str: ...


# Stands in for an assistant answer when reading what the chat template writes after one; unlikely
# to occur in any template, and without whitespace so no template trims it.
_ANSWER_SENTINEL = "TRACEGUARD7f3aANSWER"
# Ends a scored answer when the chat template writes nothing after an assistant turn: probes stop at a
# line break (`probe_stop`), so a line break is what ends an answer there too.
FALLBACK_ANSWER_TERMINATOR = "\n"


def read_answer_terminator(render_chat: RenderChat) -> str:
    """What the model's chat template writes right after an assistant answer: its end-of-turn marker
    ("<|im_end|>" for ChatML, "<|eot_id|>" for Llama 3, "<end_of_turn>" for Gemma).

    Read off a rendered conversation whose last assistant message is a sentinel: the text after the
    sentinel up to the end of its first non-blank line (what follows the marker, such as ChatML's line
    break before the next turn, says nothing about where the answer ended). Whitespace the template
    writes before the marker is kept, as the model saw it in training. `FALLBACK_ANSWER_TERMINATOR`
    when the template writes nothing after the answer, drops it, or refuses the conversation.
    """
    for content in (_ANSWER_SENTINEL, [{"type": "text", "text": _ANSWER_SENTINEL}]):
        messages = [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": content}]
        try:
            text = render_chat(messages, add_generation_prompt=False)
        except InvalidArgumentError as exc:
            logger.debug("chat template refused the terminator probe: %s", exc)
            continue
        _, found, tail = text.rpartition(_ANSWER_SENTINEL)
        if not found:
            # Templates written for list-of-parts content drop a plain string: try the other form.
            continue
        body = tail.lstrip()
        marker = body.split("\n", 1)[0].rstrip()
        if marker:
            return tail[: len(tail) - len(body)] + marker
        break
    logger.warning(
        "the chat template writes no end-of-turn marker after an assistant answer; scored chat answers "
        "end with %r instead", FALLBACK_ANSWER_TERMINATOR,
    )
    return FALLBACK_ANSWER_TERMINATOR


def _user_content(text: str, num_images: int) -> Any:
    if not num_images:
        return text
    return [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": text}]


@dataclass(frozen=True)
class PromptBuilder:
    """Renders every prompt the pipeline sends, in one style, for one model's chat template."""

    style: PromptStyle
    render_chat: RenderChat
    probe_format: ProbeFormat = ProbeFormat.LEGACY

    def _fewshot(self, images: Sequence[Any]) -> bool:
        # Images always go through the chat template, whatever the style.
        return self.style is PromptStyle.FEWSHOT and not images

    @property
    def _continues(self) -> bool:
        return self.probe_format is ProbeFormat.CONTINUE

    @property
    def path_stop(self) -> tuple[str, ...]:
        if self.style is not PromptStyle.FEWSHOT:
            return ()
        # Few-shot models go on to invent the next example; in this format a blank line ends one.
        stop = ("\n\n", "\nQuestion:")
        # The continue format's examples go on with sub-question lines after their answer: a path
        # never writes one (its probes do), nor a short answer to a sub-question it wrote unmarked.
        return (*stop, "\n" + SUB_QUESTION_MARKER, "\n" + SHORT_ANSWER_MARKER) if self._continues else stop

    @property
    def probe_stop(self) -> tuple[str, ...]:
        return ("\n",)

    def continuation_prefix(self, probe: Prompt) -> str:
        """What separates `probe` (a `probe_prompt`) from its answer (scored continuations start with it)."""
        return " " if self._fewshot(probe.images) else ""

    def continuation_suffix(self, probe: Prompt) -> str:
        """What ends an answer to `probe`. Scoring it too matters: without it a candidate that is a
        prefix of another ("1" vs "12") always looks more likely, since P("12") = P("1") * P("2" | "1").
        Few-shot answers end at their line; chat answers with the template's end-of-turn marker."""
        return "\n" if self._fewshot(probe.images) else self.chat_answer_terminator

    def continuation(self, probe: Prompt, answer: str) -> str:
        """The text scored as `answer` to `probe`: log P(answer, then its end | probe)."""
        return self.continuation_prefix(probe) + answer + self.continuation_suffix(probe)

    @functools.cached_property
    def chat_answer_terminator(self) -> str:
        # Read once, on first use: the engine may not have loaded its template when the builder is made.
        return read_answer_terminator(self.render_chat)

    # -- reasoning paths -------------------------------------------------------------------------
    def _fewshot_header(self, system_prompt: str) -> str:
        parts = [system_prompt.strip()] if system_prompt.strip() else []
        for question, solution, answer, subs in (_CONTINUE_EXAMPLES if self._continues else _EXAMPLES):
            example = f"Question: {question}\nSolution: {solution}\nAnswer: {answer}"
            if self._continues:
                # Taught here, in the prompt every probe of the request shares: the short answer of an
                # intermediate step is the step's value, not the final answer written above it.
                example += "".join(f"\n{SUB_QUESTION_MARKER} {s}\n{SHORT_ANSWER_MARKER} {v}" for s, v in subs)
            parts.append(example)
        return "\n\n".join(parts) + "\n\n"

    def _chat_messages(self, question: str, system_prompt: str, num_images: int) -> list[dict]:
        messages: list[dict] = []
        if system_prompt.strip():
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": _user_content(f"{question}\n\n{ANSWER_INSTRUCTION}", num_images)})
        return messages

    def path_prompt(self, question: str, system_prompt: str = "", images: Sequence[Any] = ()) -> Prompt:
        if self._fewshot(images):
            return Prompt(self._fewshot_header(system_prompt) + f"Question: {question}\nSolution:")
        return Prompt(self.render_chat(self._chat_messages(question, system_prompt, len(images))), tuple(images))

    # -- ARS generation --------------------------------------------------------------------------
    def ars_prompt(self, question: str, max_k: int, images: Sequence[Any] = ()) -> Prompt:
        instruction = ARS_INSTRUCTION.format(max_k=max_k)
        if self._fewshot(images):
            parts = [instruction]
            for q, _, _, subs in _EXAMPLES:
                parts.append(f"Question: {q}\nJSON: " + json.dumps({"sub_questions": [s for s, _ in subs]}))
            parts.append(f"Question: {question}\nJSON:")
            return Prompt("\n\n".join(parts))
        messages = [{"role": "user", "content": _user_content(f"{instruction}\n\nQuestion: {question}", len(images))}]
        return Prompt(self.render_chat(messages), tuple(images))

    # -- probes ----------------------------------------------------------------------------------
    def probe_prompts(
        self, question: str, path_texts: Sequence[str], sub_questions: Sequence[str], system_prompt: str = "",
        images: Sequence[Any] = (),
    ) -> list[list[Prompt]]:
        """Prompts asking every sub-question of every path: [k][i] asks sub-question k of path i."""
        if not self._continues:
            return [
                [self._legacy_probe(question, text, sub, system_prompt, images) for text in path_texts]
                for sub in sub_questions
            ]
        sampled = self.path_prompt(question, system_prompt, images)
        workings = [working_text(text) for text in path_texts]
        grid = []
        for sub in sub_questions:
            if self._fewshot(images):
                grid.append([self._fewshot_continuation(sampled, w, sub) for w in workings])
                continue
            tail = self._chat_probe_tail(question, sub, system_prompt, len(images), sampled.text)
            grid.append([
                Prompt(sampled.text + w.rstrip() + tail, tuple(images)) if tail is not None
                else self._chat_probe(question, w, sub, system_prompt, images)
                for w in workings
            ])
        return grid

    def probe_prompt(
        self, question: str, path_text: str, sub_question: str, system_prompt: str = "", images: Sequence[Any] = ()
    ) -> Prompt:
        """Prompt asking one sub-question of one path; all probes of a path share everything before it."""
        return self.probe_prompts(question, [path_text], [sub_question], system_prompt, images)[0][0]

    @staticmethod
    def _fewshot_continuation(sampled: Prompt, working: str, sub_question: str) -> Prompt:
        # The working ends where the path's answer line began: after the line break the path wrote
        # (kept: the same token as in the cached path), or mid-line, where one is added.
        working = working.rstrip(" \t")
        if not working.endswith("\n"):
            working += "\n"
        return Prompt(f"{sampled.text}{working}{SUB_QUESTION_MARKER} {sub_question}\n{SHORT_ANSWER_MARKER}")

    def _chat_probe_tail(
        self, question: str, sub_question: str, system_prompt: str, num_images: int, sampled_text: str
    ) -> str | None:
        """What the chat template writes after the path's turn up to the probe's answer (the end of the
        turn, the sub-question turn, the generation prompt), when everything before the path's turn is
        exactly the sampling prompt; None when the template renders a past assistant turn differently.

        Rendered around a sentinel standing in for the path, so the path's text goes in verbatim, as it
        was generated (a template that trims or rewrites assistant turns would break the shared prefix).
        """
        probe = PROBE_INSTRUCTION.format(sub_question=sub_question)
        for content in (_ANSWER_SENTINEL, [{"type": "text", "text": _ANSWER_SENTINEL}]):
            messages = self._chat_messages(question, system_prompt, num_images)
            messages += [{"role": "assistant", "content": content}, {"role": "user", "content": probe}]
            head, found, tail = self.render_chat(messages).partition(_ANSWER_SENTINEL)
            if found:
                return tail if head == sampled_text else None
        return None

    def _chat_probe(
        self, question: str, path_text: str, sub_question: str, system_prompt: str, images: Sequence[Any]
    ) -> Prompt:
        messages = self._chat_messages(question, system_prompt, len(images))
        messages.append({"role": "assistant", "content": path_text.strip()})
        messages.append({"role": "user", "content": PROBE_INSTRUCTION.format(sub_question=sub_question)})
        return Prompt(self.render_chat(messages), tuple(images))

    def _legacy_probe(
        self, question: str, path_text: str, sub_question: str, system_prompt: str, images: Sequence[Any]
    ) -> Prompt:
        if self._fewshot(images):
            header = "".join(
                f"Question: {q}\nSolution: {sol}\nAnswer: {ans}\nSub-question: {subs[0][0]}\nShort answer: {subs[0][1]}\n\n"
                for q, sol, ans, subs in _EXAMPLES
            )
            return Prompt(
                header
                + f"Question: {question}\nSolution: {path_text.strip()}\nSub-question: {sub_question}\nShort answer:"
            )
        return self._chat_probe(question, path_text, sub_question, system_prompt, images)
