"""Prompt templates of the model profile: reasoning paths, ARS generation and sub-question probes."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from guard.engine import Prompt


class PromptStyle(enum.Enum):
    # The model's chat template with an instruction (instruction-tuned and vision-language models).
    CHAT = "chat"
    # A plain few-shot completion prompt; small models reason far better this way (see DESIGN.md).
    FEWSHOT = "fewshot"


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

ANSWER_INSTRUCTION = (
    "Solve the problem step by step. End with a last line of the form 'Answer: <answer>', "
    "where <answer> is only the final value (a number, an option letter or a short phrase)."
)
ARS_INSTRUCTION = (
    "Break the question into at most {max_k} short sub-questions whose answers (each a number or a "
    "single word) lead step by step to the final answer. Do not repeat the question itself. "
    'Reply with JSON: {{"sub_questions": [...]}}.'
)
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


def _user_content(text: str, num_images: int) -> Any:
    if not num_images:
        return text
    return [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": text}]


@dataclass(frozen=True)
class PromptBuilder:
    """Renders every prompt the pipeline sends, in one style, for one model's chat template."""

    style: PromptStyle
    render_chat: Callable[[Sequence[dict]], str]

    @property
    def path_stop(self) -> tuple[str, ...]:
        # Few-shot models go on to invent the next example; in this format a blank line ends one.
        return ("\n\n", "\nQuestion:") if self.style is PromptStyle.FEWSHOT else ()

    @property
    def probe_stop(self) -> tuple[str, ...]:
        return ("\n",)

    @property
    def continuation_prefix(self) -> str:
        """What separates a probe prompt from its answer (scored continuations start with it)."""
        return " " if self.style is PromptStyle.FEWSHOT else ""

    @property
    def continuation_suffix(self) -> str:
        """What ends a probe answer. Scoring it too matters: without it a candidate that is a prefix
        of another ("1" vs "12") always looks more likely, since P("12") = P("1") * P("2" | "1")."""
        return "\n" if self.style is PromptStyle.FEWSHOT else ""

    # -- reasoning paths -------------------------------------------------------------------------
    def _fewshot_header(self, system_prompt: str) -> str:
        parts = [system_prompt.strip()] if system_prompt.strip() else []
        for question, solution, answer, _ in _EXAMPLES:
            parts.append(f"Question: {question}\nSolution: {solution}\nAnswer: {answer}")
        return "\n\n".join(parts) + "\n\n"

    def _chat_messages(self, question: str, system_prompt: str, num_images: int) -> list[dict]:
        messages: list[dict] = []
        if system_prompt.strip():
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": _user_content(f"{question}\n\n{ANSWER_INSTRUCTION}", num_images)})
        return messages

    def path_prompt(self, question: str, system_prompt: str = "", images: Sequence[Any] = ()) -> Prompt:
        if self.style is PromptStyle.FEWSHOT and not images:
            return Prompt(self._fewshot_header(system_prompt) + f"Question: {question}\nSolution:")
        return Prompt(self.render_chat(self._chat_messages(question, system_prompt, len(images))), tuple(images))

    # -- ARS generation --------------------------------------------------------------------------
    def ars_prompt(self, question: str, max_k: int, images: Sequence[Any] = ()) -> Prompt:
        instruction = ARS_INSTRUCTION.format(max_k=max_k)
        if self.style is PromptStyle.FEWSHOT and not images:
            parts = [instruction]
            for q, _, _, subs in _EXAMPLES:
                parts.append(f"Question: {q}\nJSON: " + json.dumps({"sub_questions": [s for s, _ in subs]}))
            parts.append(f"Question: {question}\nJSON:")
            return Prompt("\n\n".join(parts))
        messages = [{"role": "user", "content": _user_content(f"{instruction}\n\nQuestion: {question}", len(images))}]
        return Prompt(self.render_chat(messages), tuple(images))

    # -- probes ----------------------------------------------------------------------------------
    def probe_prompt(
        self, question: str, path_text: str, sub_question: str, system_prompt: str = "", images: Sequence[Any] = ()
    ) -> Prompt:
        """Prompt asking one sub-question of one path; all probes of a path share everything before it."""
        if self.style is PromptStyle.FEWSHOT and not images:
            header = "".join(
                f"Question: {q}\nSolution: {sol}\nAnswer: {ans}\nSub-question: {subs[0][0]}\nShort answer: {subs[0][1]}\n\n"
                for q, sol, ans, subs in _EXAMPLES
            )
            return Prompt(
                header
                + f"Question: {question}\nSolution: {path_text.strip()}\nSub-question: {sub_question}\nShort answer:"
            )
        messages = self._chat_messages(question, system_prompt, len(images))
        messages.append({"role": "assistant", "content": path_text.strip()})
        messages.append({"role": "user", "content": PROBE_INSTRUCTION.format(sub_question=sub_question)})
        return Prompt(self.render_chat(messages), tuple(images))
