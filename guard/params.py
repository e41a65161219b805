"""One validated, immutable params object per guarded request, plus the server's defaults and limits."""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field, replace
from typing import Any

from guard.errors import InvalidArgumentError


class Mode(enum.Enum):
    GUARD = "guard"
    RAW = "raw"


class ScoreMode(enum.Enum):
    """How the `score` stage turns probe answers into per-path soft distributions (trace scorer only).

    Scoring is the costly stage (one teacher-forced engine request per path, sub-question and
    candidate); the modes trade its cost against the soft signal. See benchmarks/README.md.
    """

    # Every sub-question with more than one distinct probe answer; its 4 most common answers are
    # scored under every path (the original TRACE-style soft scoring).
    FULL = "full"
    # Only contested sub-questions (hard agreement under `guard.probe.CONTESTED_AGREEMENT`), and per
    # path only two candidates: the mode against the path's own answer (or the runner-up when the path
    # answered the mode). Agreed sub-questions keep hard agreement.
    CONTESTED = "contested"
    # No scoring: hard agreement only.
    HARD = "hard"


@dataclass(frozen=True)
class Limits:
    """Hard bounds on request knobs; a request outside them is INVALID_ARGUMENT."""

    max_num_paths: int = 64
    max_tokens: int = 2048
    max_question_chars: int = 8000
    max_system_prompt_chars: int = 4000
    max_sub_questions: int = 8
    max_sub_question_chars: int = 500
    max_images: int = 4
    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_request_id_chars: int = 128
    max_temperature: float = 2.0
    max_seed: int = 2**63 - 1
    max_latency_budget_ms: int = 3_600_000
    max_total_tokens: int = 10_000_000


@dataclass(frozen=True)
class Defaults:
    """Values used for knobs a request leaves unset; also `GuardParams`' field defaults and the CLI's.

    (`trace-guard serve` deliberately serves another scorer by default: see `SERVE_DEFAULT_SCORER`
    in `server.cli.serve`.)
    """

    num_paths: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    mode: Mode = Mode.GUARD
    scorer: str = "trace"
    score_mode: ScoreMode = ScoreMode.HARD
    # Adaptive sampling (guard.sampling): off until the benchmarks say it should be on.
    adaptive: bool = False
    min_paths: int = 4
    stop_level: float = 0.95
    parallel_paths: int = 4
    # Online DeepConf (guard.confidence_abort): off until the benchmarks say it should be on.
    confidence_abort: bool = False
    confidence_warmup: int = 4
    confidence_keep: float = 0.9


@dataclass(frozen=True)
class ImageInput:
    """An image exactly as the client sent it; decoded and checked by `guard.images`."""

    data: bytes
    mime_type: str


@dataclass(frozen=True)
class GuardParams:
    """Everything one request asks of the guard. Validated once, in `__post_init__`."""

    question: str
    """The question to answer; non-empty, at most `limits.max_question_chars` characters."""
    images: tuple[ImageInput, ...] = ()
    """Inline images, in prompt order."""
    system_prompt: str = ""
    """Optional system prompt placed before the question."""
    sub_questions: tuple[str, ...] = ()
    """Client-supplied Auxiliary Reasoning Set; empty means cache or model-generated."""
    num_paths: int = Defaults.num_paths
    """Reasoning paths sampled in one engine request (n)."""
    temperature: float = Defaults.temperature
    """Sampling temperature for the paths (>= 0)."""
    top_p: float = Defaults.top_p
    """Nucleus sampling mass for the paths, in (0, 1]."""
    max_tokens: int = Defaults.max_tokens
    """Maximum new tokens per path."""
    seed: int | None = None
    """Sampling seed; None for random."""
    mode: Mode = Defaults.mode
    """GUARD samples num_paths and guards; RAW returns one sample in the same envelope."""
    request_id: str = ""
    """Caller's id for logs and the response."""
    return_paths_text: bool = False
    """Include each path's text in the result."""
    scorer: str = Defaults.scorer
    """Name of the consistency scorer (see `guard.scorers.SCORERS`)."""
    score_mode: ScoreMode = Defaults.score_mode
    """How probe answers are scored into soft distributions (`ScoreMode`; its value string is accepted
    too). CONTESTED by default: about half the scoring requests of FULL, same quality within noise."""
    latency_budget_ms: int | None = None
    """Soft latency target: past it the guard skips or cuts short ARS, probing and scoring (never
    sampling) and says so in the result's notes. None: no budget (the gRPC deadline still applies)."""
    adaptive: bool = Defaults.adaptive
    """Sample paths one engine request each and stop once the vote is settled (see guard.sampling);
    num_paths is then the most paths sampled."""
    min_paths: int = Defaults.min_paths
    """Adaptive: never stop before this many paths finished (capped at num_paths)."""
    stop_level: float = Defaults.stop_level
    """Adaptive: stop when the leading answer stays the leader with at least this probability, in (0.5, 1]."""
    parallel_paths: int = Defaults.parallel_paths
    """Adaptive: most paths sampled at once; never more than the vote could still need (see guard.sampling)."""
    confidence_abort: bool = Defaults.confidence_abort
    """Online DeepConf (see guard.confidence_abort): paths sampled one engine request each, and a running
    path whose sliding-window token confidence falls under a threshold set from the request's first
    paths is aborted; aborted paths never vote."""
    confidence_warmup: int = Defaults.confidence_warmup
    """Confidence abort: the first paths started, which run to their end and set the threshold."""
    confidence_keep: float = Defaults.confidence_keep
    """Confidence abort: share of paths the threshold keeps, in (0, 1]; the threshold is the (1 - keep)
    quantile of the warm-up paths' lowest window confidence (0.9: DeepConf-high, 0.1: DeepConf-low)."""
    max_total_tokens: int | None = None
    """Tokens the engine may generate for the request, all phases together (see guard.token_budget): the
    guard samples fewer paths, skips ARS generation or probing rather than exceed it. None: no cap."""
    limits: Limits = field(default_factory=Limits, repr=False, compare=False)
    """Bounds the other fields were validated against."""

    def __post_init__(self) -> None:
        lim = self.limits
        if not isinstance(self.question, str) or not self.question.strip():
            raise InvalidArgumentError("question", "must be a non-empty string")
        if len(self.question) > lim.max_question_chars:
            raise InvalidArgumentError(
                "question", f"is {len(self.question)} characters, the limit is {lim.max_question_chars}"
            )
        if "\x00" in self.question:
            raise InvalidArgumentError("question", "must not contain NUL characters")
        if len(self.system_prompt) > lim.max_system_prompt_chars:
            raise InvalidArgumentError(
                "system_prompt",
                f"is {len(self.system_prompt)} characters, the limit is {lim.max_system_prompt_chars}",
            )
        self._check_images()
        self._check_sub_questions()
        _check_int("num_paths", self.num_paths, 1, lim.max_num_paths)
        _check_int("max_tokens", self.max_tokens, 1, lim.max_tokens)
        _check_float("temperature", self.temperature, 0.0, lim.max_temperature, low_open=False)
        _check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, lim.max_seed)
        self._check_adaptive()
        if self.max_total_tokens is not None:
            _check_int("max_total_tokens", self.max_total_tokens, 1, lim.max_total_tokens)
            if self.max_total_tokens < self.max_tokens:
                raise InvalidArgumentError(
                    "max_total_tokens", f"must allow one path: at least max_tokens ({self.max_tokens}), "
                    f"got {self.max_total_tokens}")
        if self.latency_budget_ms is not None:
            _check_int("latency_budget_ms", self.latency_budget_ms, 1, lim.max_latency_budget_ms)
        if not isinstance(self.mode, Mode):
            raise InvalidArgumentError("mode", f"unknown mode {self.mode!r}")
        if not isinstance(self.score_mode, ScoreMode):
            try:
                object.__setattr__(self, "score_mode", ScoreMode(self.score_mode))
            except ValueError:
                raise InvalidArgumentError(
                    "score_mode", f"unknown score mode {self.score_mode!r}; known: {[m.value for m in ScoreMode]}"
                ) from None
        if len(self.request_id) > lim.max_request_id_chars:
            raise InvalidArgumentError("request_id", f"is longer than {lim.max_request_id_chars} characters")
        if not self.request_id.isprintable():
            raise InvalidArgumentError("request_id", "must be printable")
        # Imported here: the scorer registry imports result types that import params.
        from guard.scorers import SCORERS

        if self.scorer not in SCORERS:
            raise InvalidArgumentError("scorer", f"unknown scorer {self.scorer!r}; known: {sorted(SCORERS)}")

    def _check_adaptive(self) -> None:
        if not isinstance(self.adaptive, bool):
            raise InvalidArgumentError("adaptive", f"must be a boolean, got {self.adaptive!r}")
        _check_int("min_paths", self.min_paths, 1, self.limits.max_num_paths)
        _check_int("parallel_paths", self.parallel_paths, 1, self.limits.max_num_paths)
        _check_float("stop_level", self.stop_level, 0.5, 1.0, low_open=True)
        if not isinstance(self.confidence_abort, bool):
            raise InvalidArgumentError("confidence_abort", f"must be a boolean, got {self.confidence_abort!r}")
        _check_int("confidence_warmup", self.confidence_warmup, 1, self.limits.max_num_paths)
        _check_float("confidence_keep", self.confidence_keep, 0.0, 1.0, low_open=True)

    def _check_images(self) -> None:
        lim = self.limits
        if len(self.images) > lim.max_images:
            raise InvalidArgumentError("images", f"{len(self.images)} images, the limit is {lim.max_images}")
        for i, image in enumerate(self.images):
            if not image.data:
                raise InvalidArgumentError(f"images[{i}].data", "is empty")
            if len(image.data) > lim.max_image_bytes:
                raise InvalidArgumentError(
                    f"images[{i}].data", f"is {len(image.data)} bytes, the limit is {lim.max_image_bytes}"
                )

    def _check_sub_questions(self) -> None:
        lim = self.limits
        if len(self.sub_questions) > lim.max_sub_questions:
            raise InvalidArgumentError(
                "sub_questions", f"{len(self.sub_questions)} given, the limit is {lim.max_sub_questions}"
            )
        seen: set[str] = set()
        main = canonical_question(self.question)
        for i, sub in enumerate(self.sub_questions):
            name = f"sub_questions[{i}]"
            if not sub.strip():
                raise InvalidArgumentError(name, "is empty")
            if len(sub) > lim.max_sub_question_chars:
                raise InvalidArgumentError(name, f"is longer than {lim.max_sub_question_chars} characters")
            key = canonical_question(sub)
            if key == main:
                raise InvalidArgumentError(name, "repeats the main question")
            if key in seen:
                raise InvalidArgumentError(name, "duplicates an earlier sub-question")
            seen.add(key)

    @classmethod
    def build(cls, *, defaults: Defaults, limits: Limits, **fields: Any) -> GuardParams:
        """Fill unset (None) knobs from `defaults`, then validate against `limits`."""
        for knob in dataclasses.fields(Defaults):
            if fields.get(knob.name) is None:
                fields[knob.name] = getattr(defaults, knob.name)
        return cls(limits=limits, **fields)

    def with_request_id(self, request_id: str) -> GuardParams:
        return replace(self, request_id=request_id)


def canonical_question(text: str) -> str:
    """Lower case, single spaces, no trailing "?", "." or "!": how two spellings of one question compare."""
    return " ".join(text.lower().split()).rstrip("?.! ")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(name, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidArgumentError(name, f"must be in [{low}, {high}], got {value}")


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidArgumentError(name, f"must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise InvalidArgumentError(name, f"must be in {bracket}{low}, {high}], got {value}")
