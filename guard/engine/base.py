"""The small engine protocol the guard pipeline is written against, and its value types."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from guard.errors import InvalidArgumentError


@dataclass(frozen=True)
class Prompt:
    """A fully rendered prompt: text (chat template already applied) plus decoded images.

    `images` holds PIL images in the order their placeholders appear in `text`.
    """

    text: str
    images: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SampleSpec:
    """Sampling knobs for one engine request."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Top-k alternatives returned per generated token (0 = only the chosen token's logprob).
    logprobs: int | None = None
    # When set, output is constrained to this JSON schema (vLLM structured outputs).
    json_schema: dict | None = None

    def __post_init__(self) -> None:
        # Checked once here rather than by each engine before it submits.
        if self.n < 1:
            raise InvalidArgumentError("n", "must be at least 1")
        if self.max_tokens < 1:
            raise InvalidArgumentError("max_tokens", "must be at least 1")

    def decode_once(self) -> tuple[SampleSpec, int]:
        """The spec to send and how many copies of each completion to make from it.

        Greedy decoding gives n identical completions, and vLLM refuses n > 1 with it: decode
        once and repeat (see `repeat_completions`)."""
        if self.temperature == 0 and self.n > 1:
            return dataclasses.replace(self, n=1), self.n
        return self, 1


@dataclass
class Completion:
    """One generated sequence."""

    text: str
    num_tokens: int
    finish_reason: str | None
    # Log-probability of each chosen token (empty when logprobs were not requested).
    token_logprobs: list[float] = field(default_factory=list)
    # Per position: log-probabilities of the top-k alternatives (DeepConf token confidence).
    top_logprobs: list[list[float]] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """Cut at its token limit: whatever it was writing (an answer, a value) may be cut too."""
        return self.finish_reason == "length"


def repeat_completions(completions: list[Completion], copies: int) -> list[Completion]:
    """Each completion `copies` times, as independent objects (the other half of `decode_once`)."""
    if copies == 1:
        return completions
    return [dataclasses.replace(c) for c in completions for _ in range(copies)]


@dataclass
class GenerationResult:
    """All completions of one engine request (n of them), plus prompt accounting."""

    completions: list[Completion]
    prompt_tokens: int
    cached_prompt_tokens: int = 0

    @property
    def generated_tokens(self) -> int:
        return sum(c.num_tokens for c in self.completions)


@dataclass(frozen=True)
class ScoreItem:
    """Teacher-forced scoring: log P(continuation | context)."""

    context: Prompt
    continuation: str


@dataclass
class ScoreResult:
    logprob_sum: float
    num_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    engine: str
    max_model_len: int
    accepts_images: bool


@runtime_checkable
class Engine(Protocol):
    """What the guard needs from a model server.

    Every method that takes a `request_id` tags the engine requests it creates with it, so
    `abort(request_id)` stops all of them. Cancelling the awaiting task also aborts them.
    Failures raise `EngineError`.
    """

    async def start(self) -> None:
        """Load the model; must not block the event loop. Idempotent."""

    @property
    def ready(self) -> bool:
        """True once `start` has finished and the engine is healthy."""

    def info(self) -> ModelInfo: ...

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """Apply the model's chat template to OpenAI-style messages."""

    async def generate(self, prompt: Prompt, spec: SampleSpec, request_id: str) -> GenerationResult:
        """One engine request producing `spec.n` completions that share the prompt's prefix."""

    async def generate_many(
        self, prompts: Sequence[Prompt], spec: SampleSpec, request_id: str
    ) -> list[GenerationResult]:
        """Submit all prompts at once (one batch for the scheduler); results in input order."""

    async def score(self, items: Sequence[ScoreItem], request_id: str) -> list[ScoreResult]:
        """Teacher-forced log-likelihoods of all items, submitted at once; results in input order."""

    async def abort(self, request_id: str) -> None:
        """Abort every engine request created for `request_id`."""

    async def check_health(self) -> None:
        """Raise EngineError if the engine is dead."""

    async def shutdown(self) -> None: ...

    async def restart(self) -> None:
        """Replace a dead engine with a fresh one (shut the old one down, start again)."""

    def num_running_requests(self) -> int:
        """Engine requests submitted and not yet finished or aborted (0 when idle)."""

