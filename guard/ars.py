"""Auxiliary Reasoning Set sources: request, bounded LRU cache, or generation by the served model."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from guard.engine import Engine, SampleSpec
from guard.params import ImageInput, canonical_question
from guard.prompts import PromptBuilder, ars_json_schema
from guard.result import ArsSource, PhaseUsage

logger = logging.getLogger(__name__)


@dataclass
class ArsOutcome:
    sub_questions: list[str]
    source: ArsSource
    error: str = ""


def ars_cache_key(question: str, images: Sequence[ImageInput]) -> str:
    digest = hashlib.sha256(canonical_question(question).encode())
    for image in images:
        digest.update(b"\x00image\x00")
        digest.update(hashlib.sha256(image.data).digest())
    return digest.hexdigest()


class ArsCache:
    """Thread-safe bounded LRU of sub-question lists keyed by (question, images) hash."""

    def __init__(self, max_entries: int = 1024):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> list[str] | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                return None
            self._entries.move_to_end(key)
            return list(value)

    def put(self, key: str, sub_questions: Sequence[str]) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._entries[key] = tuple(sub_questions)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def clean_sub_questions(candidates: Sequence[object], question: str, max_k: int) -> list[str]:
    """Keep the usable model-generated sub-questions: strings, non-empty, not the question, no repeats."""
    main = canonical_question(question)
    # A model asked to decompose often just restates the final question sentence. As the last step
    # of a decomposition that is fine (GSM8K's gold sets end that way), but alone it adds nothing
    # to answer agreement, so a set made only of it counts as no set.
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", question.strip()) if s]
    final_sentence = canonical_question(sentences[-1]) if sentences else main
    seen: set[str] = set()
    kept: list[str] = []
    for item in candidates:
        if not isinstance(item, str):
            continue
        text = " ".join(item.split())
        key = canonical_question(text)
        if len(key) < 3 or key == main or key in seen:
            continue
        seen.add(key)
        kept.append(text)
        if len(kept) == max_k:
            break
    if all(canonical_question(k) == final_sentence for k in kept):
        return []
    return kept


def ars_seed(question: str, images: Sequence[ImageInput]) -> int:
    """A seed fixed by the question and images, so every replica samples the same retry."""
    return int(ars_cache_key(question, images)[:8], 16)


def read_ars_texts(texts: Sequence[str], question: str, max_k: int) -> ArsOutcome:
    """The usable sub-questions of one or more JSON answers, in order, repeats dropped."""
    raw: list[object] = []
    error = ""
    for text in texts:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            error = error or f"model returned invalid JSON: {exc.msg}"
            continue
        items = data.get("sub_questions", []) if isinstance(data, dict) else []
        raw.extend(items if isinstance(items, list) else [])
    sub_questions = clean_sub_questions(raw, question, max_k)
    if sub_questions:
        return ArsOutcome(sub_questions, ArsSource.MODEL)
    if raw or not error:
        error = "model generated no usable sub-question"
    return ArsOutcome([], ArsSource.NONE, error)


async def generate_ars(
    engine: Engine,
    prompts: PromptBuilder,
    question: str,
    images: Sequence[object],
    max_k: int,
    max_tokens: int,
    request_id: str,
    usage: PhaseUsage,
    *,
    retry_samples: int = 0,
    retry_temperature: float = 0.8,
    seed: int | None = None,
) -> ArsOutcome:
    """One greedy call constrained to a JSON schema; any failure yields an empty ARS with the reason.

    A small model decoding greedily often only restates the question. When the greedy answer has no
    usable sub-question, `retry_samples` > 0 asks once more for that many sampled decompositions in
    one batched call (seeded by `seed`, so replicas agree) and keeps the usable steps of all of them.
    """
    prompt = prompts.ars_prompt(question, max_k, images)
    schema = ars_json_schema(max_k)
    spec = SampleSpec(n=1, temperature=0.0, max_tokens=max_tokens, json_schema=schema)
    result = await engine.generate(prompt, spec, request_id)
    usage.add(result.prompt_tokens, result.generated_tokens, result.cached_prompt_tokens)
    outcome = read_ars_texts([c.text for c in result.completions[:1]], question, max_k)
    if outcome.sub_questions or retry_samples <= 0:
        if outcome.error:
            logger.info("request %s: ARS generation: %s", request_id, outcome.error)
        return outcome
    retry = SampleSpec(n=retry_samples, temperature=retry_temperature, max_tokens=max_tokens,
                       seed=seed, json_schema=schema)
    result = await engine.generate(prompt, retry, request_id)
    usage.add(result.prompt_tokens, result.generated_tokens, result.cached_prompt_tokens)
    retried = read_ars_texts([c.text for c in result.completions], question, max_k)
    if retried.sub_questions:
        return retried
    error = f"{outcome.error}; {retry_samples} sampled retries: {retried.error}"
    logger.info("request %s: ARS generation: %s", request_id, error)
    return ArsOutcome([], ArsSource.NONE, error)
