"""What a guarded request reports while it runs (for the streaming API): provisional answer, each finished
path, the sub-questions, progress; and whether the final decision takes the provisional answer back."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guard.answers import Answer, answers_equivalent, representative
from guard.confidence_abort import LOW_CONFIDENCE
from guard.engine import Completion
from guard.result import ArsSource, Decision, GuardResult
from guard.sampling import StopCheck, ranked_clusters
from guard.stages import Stage


@dataclass(frozen=True)
class ProvisionalEvent:
    """The first finished path that has an answer: what a caller can show at raw-answer latency."""

    answer: Answer
    path_index: int
    text: str


@dataclass(frozen=True)
class PathEvent:
    """One finished path (start order index), as soon as it ends; or one aborted early."""

    index: int
    answer: Answer | None
    num_tokens: int
    finish_reason: str | None
    # Aborted before its end because its confidence collapsed (online DeepConf): it does not vote.
    aborted: bool = False


@dataclass(frozen=True)
class ArsEvent:
    """The sub-questions, once known (request, cache or model)."""

    sub_questions: tuple[str, ...]
    source: ArsSource


@dataclass(frozen=True)
class ProgressEvent:
    """The stage the request is in, and the current leader among the finished paths."""

    stage: Stage
    leader: Answer | None
    vote_share: float
    paths_finished: int
    # Set once, on the event that ends sampling: why it stopped ("fixed", "settled", "max_paths").
    stop_reason: str = ""


GuardEvent = ProvisionalEvent | PathEvent | ArsEvent | ProgressEvent


@dataclass(frozen=True)
class Timed:
    """An event and when it happened, in milliseconds since the request started."""

    event: GuardEvent
    elapsed_ms: float


EventSink = Callable[[Timed], None]


class EventStream:
    """Stamps events with the time since the request started and hands them to a sink; remembers the
    provisional answer, so the decision can say whether it takes it back."""

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self._start = time.perf_counter()
        self.provisional: ProvisionalEvent | None = None
        # Finished paths reported so far.
        self.paths_seen = 0

    def emit(self, event: GuardEvent) -> None:
        if isinstance(event, ProvisionalEvent):
            if self.provisional is not None:
                return
            self.provisional = event
        self._sink(Timed(event, (time.perf_counter() - self._start) * 1e3))

    def path_finished(self, index: int, completion: Completion, answer: Answer | None, check: StopCheck | None) -> None:
        """A path ended (the sampler's observer): the first with an answer is also the provisional answer;
        then the vote so far."""
        if answer is not None:
            self.emit(ProvisionalEvent(answer, index, completion.text))
        self.emit(PathEvent(index, answer, completion.num_tokens, completion.finish_reason))
        self.paths_seen += 1
        if check is not None:
            self.emit(ProgressEvent(Stage.SAMPLE, check.leader, check.leader_share, self.paths_seen))

    def path_aborted(self, index: int, num_tokens: int) -> None:
        """A path was aborted for low confidence (the sampler's abort observer)."""
        self.emit(PathEvent(index, None, num_tokens, LOW_CONFIDENCE, aborted=True))

    def ars_done(self, task: asyncio.Future) -> None:
        """Done-callback of the ARS task: the sub-questions, as soon as they are known."""
        if task.cancelled() or task.exception() is not None:
            return
        outcome = task.result().value
        if outcome is not None and outcome.sub_questions:
            self.emit(ArsEvent(tuple(outcome.sub_questions), outcome.source))

    def progress(self, stage: Stage, answers: Sequence[Answer | None], stop_reason: str = "") -> None:
        """The request moved on to `stage` (or, with `stop_reason`, sampling ended); the leader among all
        its paths."""
        clusters = ranked_clusters(answers)
        leader = answers[representative(answers, clusters[0])] if clusters else None
        share = len(clusters[0]) / len(answers) if clusters else 0.0
        self.emit(ProgressEvent(stage, leader, share, len(answers), stop_reason))


class RetractReason(enum.Enum):
    # The guard abstained: the provisional answer is not vouched for.
    ABSTAIN = "abstain"
    # The guard accepted another answer than the provisional one.
    CHANGED = "changed"


def retraction(provisional: ProvisionalEvent | None, result: GuardResult) -> RetractReason | None:
    """Why the decision takes the provisional answer back (None when it does not, or none was sent)."""
    if provisional is None or result.decision is Decision.RAW:
        return None
    if result.decision is not Decision.ACCEPT or result.answer is None:
        return RetractReason.ABSTAIN
    if not answers_equivalent(provisional.answer, result.answer):
        return RetractReason.CHANGED
    return None
