"""Online DeepConf: abort a running path once its token confidence collapses.

DeepConf (Fu et al. 2025) scores a path by its lowest group confidence: the mean token confidence (minus
the mean top-k log-probability) over a sliding window of tokens. Online, the first `warmup` paths a
request starts run to the end and set a threshold, the (1 - keep) quantile of their lowest group confidences;
every later window of a running path is checked as its tokens arrive, and a path whose window falls
under the threshold is aborted. Paths already running when the threshold is set are checked from then
on, against every window they have had. Aborted paths are reported, never counted as votes.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from guard.engine import Completion, GenerationResult, PathUpdate
from guard.errors import EngineError
from guard.scorers.deepconf import path_confidence, token_confidences

# Finish reason of a path aborted for low confidence.
LOW_CONFIDENCE = "low_confidence"


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values`, linearly interpolated between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


@dataclass(frozen=True)
class AbortRule:
    """The first `warmup` paths started set the threshold once they have finished: the (1 - keep)
    quantile of their lowest window confidence; `window` tokens per group (the `deepconf` scorer's window, so both rank paths alike)."""

    warmup: int
    keep: float = 0.9
    window: int = 16

    def threshold(self, warmup_confidences: Sequence[float]) -> float | None:
        if len(warmup_confidences) < self.warmup:
            return None
        return quantile(warmup_confidences, 1.0 - self.keep)


class WindowConfidence:
    """The lowest mean token confidence over the full windows of a running path so far (inf before the
    first full window: a path shorter than one window is never aborted)."""

    def __init__(self, window: int) -> None:
        self._tokens: deque[float] = deque(maxlen=window)
        self.lowest = float("inf")

    def add(self, top_logprobs: Sequence[Sequence[float]]) -> None:
        for confidence in token_confidences(top_logprobs):
            self._tokens.append(confidence)
            if len(self._tokens) == self._tokens.maxlen:
                self.lowest = min(self.lowest, sum(self._tokens) / len(self._tokens))


class ConfidenceWatch:
    """One request's online confidence check: the warm-up, the threshold once set, and the paths it
    follows."""

    def __init__(self, rule: AbortRule) -> None:
        self.rule = rule
        self._warmup: list[float] = []
        self.threshold: float | None = None

    def finished(self, index: int, completion: Completion) -> None:
        """Path `index` (start order) ran to its end. The warm-up is the first `warmup` paths started, not
        the first to finish: those are the shortest, and a short path has fewer windows to be low in, so
        a threshold from them would cut long paths for their length."""
        if index < self.rule.warmup:
            self._warmup.append(path_confidence(completion.top_logprobs, self.rule.window))
            self.threshold = self.rule.threshold(self._warmup)

    async def follow(self, updates: AsyncIterator[PathUpdate]) -> GenerationResult:
        """The path's result, or, when its confidence collapses, an empty result that counts the tokens
        it had generated (leaving the stream early aborts the engine request)."""
        window = WindowConfidence(self.rule.window)
        async with contextlib.aclosing(updates) as stream:
            async for update in stream:
                if update.result is not None:
                    return update.result
                window.add(update.new_top_logprobs)
                if self.threshold is not None and window.lowest < self.threshold:
                    return GenerationResult([], prompt_tokens=update.prompt_tokens,
                                            cached_prompt_tokens=update.cached_prompt_tokens,
                                            aborted_tokens=update.num_tokens)
        raise EngineError("the engine's path stream ended without a result")
