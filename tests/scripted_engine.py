"""A scripted, in-memory engine for unit and server tests (never used by the package itself)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from guard.engine import Completion, GenerationResult, ModelInfo, Prompt, SampleSpec, ScoreItem, ScoreResult
from guard.errors import EngineError
from guard.prompts import PROBE_INSTRUCTION

# The last "Solution:" of a probe prompt is the probed path (earlier ones are few-shot examples); a
# continue-format probe has only the path's working there, possibly nothing.
_PROBE = re.compile(
    r"Solution: ?(?P<path>(?:(?!Solution:).)*)\nSub-question: (?P<sub>[^\n]*)\nShort answer:$", re.DOTALL
)
# A chat probe through `render_chat` below: the path is the last assistant turn before the instruction.
_CHAT_PROBE = re.compile(
    r"<assistant>(?P<path>(?:(?!<assistant>).)*)\n<user>" + re.escape(PROBE_INSTRUCTION.split("{")[0])
    + r"(?P<sub>[^\n]*)\n<assistant>$", re.DOTALL,
)


def _probed(text: str) -> re.Match | None:
    """The (path, sub-question) a probe prompt asks about; None when `text` is no probe."""
    return _PROBE.search(text) or _CHAT_PROBE.search(text)


@dataclass
class ScriptedEngine:
    """Answers path sampling, ARS generation, probes and scoring from scripts.

    paths: texts returned for path sampling (cycled to fill n).
    probe: (path_text, sub_question) -> short answer.
    ars: JSON text returned for ARS generation, or a sequence of them handed out in order, one per
        completion (the last one repeats).
    """

    paths: Sequence[str] = ("Answer: 12",)
    probe: Callable[[str, str], str] = lambda path, sub: ""
    ars: str | Sequence[str] = '{"sub_questions": ["How many at first?"]}'
    _ars_given: int = 0
    accepts_images: bool = False
    delay_seconds: float = 0.0
    fail: Exception | None = None
    # Fault injection by call kind ("sample", "ars", "probe", "score"): raise `fail` / never return.
    fail_on: frozenset[str] | None = None
    hang_on: frozenset[str] = frozenset()
    # Calls of these kinds wait until `gate` is set (then go on normally).
    gate_on: frozenset[str] = frozenset()
    gate: asyncio.Event | None = None
    # Per-kind delays, on top of delay_seconds.
    kind_delay: dict[str, float] = field(default_factory=dict)
    # Cut outputs longer than spec.max_tokens (one word = one token) and finish them with "length".
    honor_max_tokens: bool = False
    started: bool = True
    dead: bool = False
    restarts: int = 0
    calls: list[tuple[str, int]] = field(default_factory=list)
    # Every generate call's SampleSpec, by kind.
    specs: list[tuple[str, SampleSpec]] = field(default_factory=list)
    # Every generate call's prompt, by kind ("sample", "ars", "probe").
    prompts: list[tuple[str, Prompt]] = field(default_factory=list)
    # Simulate a prefix cache of words: a prompt's cached tokens are the words it shares from its start
    # with an earlier prompt, or an earlier prompt followed by one of its completions.
    prefix_cache: bool = False
    _cached_texts: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    in_flight: int = 0
    # Path sampling hands out `paths` in turn per request id, so single-path requests of one guarded
    # request (adaptive sampling) get paths[0], paths[1], ... as one n=N request does.
    _path_cursor: dict[str, int] = field(default_factory=dict)
    # Seconds a sampled path takes per word (paths then finish in order of length).
    word_seconds: float = 0.0
    # Calls cancelled before they returned, by kind (adaptive sampling aborts unfinished paths).
    cancelled: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.started and not self.dead

    async def start(self) -> None:
        self.started = True

    def info(self) -> ModelInfo:
        return ModelInfo("scripted", "scripted", 2048, self.accepts_images)

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + "<assistant>" if add_generation_prompt else text

    async def _wait(self, kind: str) -> None:
        self.in_flight += 1
        try:
            if self.dead:
                raise EngineError("scripted engine is dead", retryable=True)
            delay = self.delay_seconds + self.kind_delay.get(kind, 0.0)
            if delay:
                await asyncio.sleep(delay)
            if kind in self.hang_on:
                await asyncio.Event().wait()
            if kind in self.gate_on and self.gate is not None:
                await self.gate.wait()
            if self.fail is not None and (self.fail_on is None or kind in self.fail_on):
                raise self.fail
        finally:
            self.in_flight -= 1

    def num_running_requests(self) -> int:
        return self.in_flight

    async def generate(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> GenerationResult:
        text = prompt.text
        if spec.json_schema is not None:
            kind, outputs = "ars", [self._next_ars() for _ in range(spec.n)]
        elif (m := _probed(text)) is not None:
            kind, outputs = "probe", [" " + self.probe(m.group("path"), m.group("sub"))]
        else:
            kind = "sample"
            first = self._path_cursor.get(request_id, 0)
            self._path_cursor[request_id] = first + spec.n
            outputs = [self.paths[(first + i) % len(self.paths)] for i in range(spec.n)]
        try:
            await self._wait(kind)
            if kind == "sample" and self.word_seconds:
                await asyncio.sleep(self.word_seconds * max(len(o.split()) for o in outputs))
        except asyncio.CancelledError:
            self.cancelled.append(kind)
            raise
        self.calls.append((kind, spec.n))
        self.specs.append((kind, spec))
        self.prompts.append((kind, prompt))
        completions = [self._completion(o, spec) for o in outputs]
        return GenerationResult(
            completions, prompt_tokens=len(text.split()), cached_prompt_tokens=self._cache(text, completions)
        )

    def _next_ars(self) -> str:
        if isinstance(self.ars, str):
            return self.ars
        text = self.ars[min(self._ars_given, len(self.ars) - 1)]
        self._ars_given += 1
        return text

    def _cache(self, text: str, completions: list[Completion]) -> int:
        if not self.prefix_cache:
            return 0
        shared = max((len(os.path.commonprefix([text, seen]).split()) for seen in self._cached_texts),
                     default=0)
        self._cached_texts += [text] + [text + c.text for c in completions]
        # Whole words only (the last shared one may be cut), never the whole prompt (the engine always
        # computes at least one token).
        return max(0, min(shared - 1, len(text.split()) - 1))

    def _completion(self, text: str, spec: SampleSpec) -> Completion:
        words, finish = text.split(), "stop"
        if self.honor_max_tokens and len(words) > spec.max_tokens:
            words, finish = words[: spec.max_tokens], "length"
            text = " " + " ".join(words)
        return Completion(
            text=text,
            num_tokens=len(words),
            finish_reason=finish,
            token_logprobs=[-0.1] * len(words),
            top_logprobs=[[-0.1, -3.0] for _ in words] if spec.logprobs else [],
        )

    async def generate_many(self, prompts: Sequence[Prompt], spec: SampleSpec, request_id: str):
        return list(await asyncio.gather(*(self.generate(p, spec, request_id) for p in prompts)))

    async def score(self, items: Sequence[ScoreItem], request_id: str) -> list[ScoreResult]:
        await self._wait("score")
        self.calls.append(("score", len(items)))
        out = []
        for item in items:
            m = _probed(item.context.text)
            expected = self.probe(m.group("path"), m.group("sub")) if m else ""
            logprob = -0.5 if item.continuation.strip() == expected else -4.0
            out.append(ScoreResult(logprob, 1, len(item.context.text.split())))
        return out

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def check_health(self) -> None:
        if self.dead:
            raise EngineError("scripted engine is dead", retryable=True)
        if self.fail is not None and self.fail_on is None and isinstance(self.fail, EngineError) and self.fail.retryable:
            raise self.fail

    async def shutdown(self) -> None:
        self.started = False

    async def restart(self) -> None:
        self.restarts += 1
        self.dead = False
        self.started = True


def ars_json(*sub_questions: str) -> str:
    return json.dumps({"sub_questions": list(sub_questions)})
