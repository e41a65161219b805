"""Typed outcome of one guarded request: decision, answer, per-path and per-sub-question results, stats."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from guard.answers import Answer
from guard.params import Mode

if TYPE_CHECKING:
    from guard.sampling import SamplingReport
    from guard.scorers import ScoringInput


class Decision(enum.Enum):
    ACCEPT = "accept"
    ABSTAIN = "abstain"
    RAW = "raw"


class AbstainReason(enum.Enum):
    NO_ANSWER = "no_answer"
    LOW_CONFIDENCE = "low_confidence"
    SILENT_FAILURE = "silent_failure"
    TIE = "tie"


class Region(enum.Enum):
    RELIABLE = "reliable"
    SILENT_RISK = "silent_risk"
    UNCERTAIN = "uncertain"
    NO_ANSWER = "no_answer"


class ProbeAnswerSource(enum.Enum):
    """Where a path's probe answer comes from, read against the path's own text."""

    # The path's own final answer: a restatement (an echo), kept as the answer but counted apart.
    FINAL_ANSWER = "final_answer"
    # One of the values the path wrote in its working (an operand or the result of one of its steps).
    PATH_VALUE = "path_value"
    # Neither: the path may have reasoned in words, or the probe made the value up.
    OTHER = "other"


class ArsSource(enum.Enum):
    NONE = "none"
    REQUEST = "request"
    CACHE = "cache"
    MODEL = "model"


@dataclass(frozen=True)
class PathResult:
    index: int
    text: str
    answer: Answer | None
    num_tokens: int
    finish_reason: str | None
    mean_token_logprob: float = 0.0
    # Normalised values the path wrote in its working, before its answer line (answers.path_values).
    path_values: list[str] = field(default_factory=list)
    # Weight of this path under the scorer used.
    score: float = 0.0
    # ARS support in [0, 1]: share of the path's informative steps matching the mode (the mean of the
    # other paths when it has none; 1.0 when no ARS was used or none of it was informative).
    support: float = 1.0
    # 1-based First Failure Step; None when the path never departs from a well-supported mode.
    first_failure_step: int | None = None
    in_winning_cluster: bool = False


@dataclass(frozen=True)
class SubQuestionResult:
    sub_question: str
    modal_answer: str
    agreement: float
    soft_agreement: float
    # Each path's normalised answer ("" when unanswered), in path order.
    path_answers: list[str]
    # Paths whose probe answer could be read (the rest are missing, not disagreeing).
    answered: int = 0
    # Restates the question or is mostly answered with each path's own final answer: left out of
    # support and FFS.
    echo: bool = False
    # Paths whose answer to this sub-question equals their own final answer.
    echo_paths: int = 0
    # Paths whose answer is one of the values they wrote in their working, other than their final
    # answer (echo_paths + from_path_values + the OTHER answers = answered).
    from_path_values: int = 0
    # Per path, in path order: where its answer comes from (None when unanswered).
    path_answer_sources: list[ProbeAnswerSource | None] = field(default_factory=list)
    # False: not put to the paths, because it restates the question (its answer is each path's final
    # answer, so it is an echo; path_answers are then all "").
    probed: bool = True


@dataclass
class PhaseUsage:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_prompt_tokens: int = 0
    # Completions cut at their token limit (paths: no answer read; probes: value unreadable).
    truncated: int = 0

    def add(self, prompt_tokens: int, generated_tokens: int, cached_prompt_tokens: int = 0, truncated: int = 0) -> None:
        self.prompt_tokens += prompt_tokens
        self.generated_tokens += generated_tokens
        self.cached_prompt_tokens += cached_prompt_tokens
        self.truncated += truncated


@dataclass(frozen=True)
class GuardResult:
    """Built once, at the end of the request; stage-keyed dicts are keyed by `guard.stages.Stage`
    (a str enum, so plain stage names read them too)."""

    request_id: str
    mode: Mode
    decision: Decision
    answer: Answer | None
    confidence: float
    model: str
    scorer: str
    abstain_reason: AbstainReason | None = None
    region: Region | None = None
    vote_share: float = 0.0
    threshold: float = 0.0
    paths: list[PathResult] = field(default_factory=list)
    sub_questions: list[SubQuestionResult] = field(default_factory=list)
    ars_source: ArsSource = ArsSource.NONE
    ars_error: str = ""
    usage: dict[str, PhaseUsage] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Wall time spent awaiting the engine; total minus this is the guard's own overhead.
    engine_wait_ms: float = 0.0
    notes: list[str] = field(default_factory=list)
    # Optional stages skipped or cut short (latency budget, context overflow; notes say why) ("ars", "probe", "score").
    degraded_stages: list[str] = field(default_factory=list)
    # Features of the winning cluster (vote_share, weighted_share, margin, ars_agreement, support,
    # token_confidence), as the policy and calibration see them.
    features: dict[str, float] = field(default_factory=dict)
    # How the paths were sampled (fixed N, or adaptive: started, finished, aborted, why it stopped).
    sampling: SamplingReport | None = None
    # Everything the scorers saw, kept so offline tools (benchmarks, calibration) can re-score
    # the same samples with another scorer or policy. Never sent over the wire.
    scoring: ScoringInput | None = field(default=None, repr=False)
