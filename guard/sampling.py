"""Adaptive sampling: paths as a stream of single-path engine requests, stopped once the vote is settled.

Each path is its own engine request (n=1) on the same prompt, so the engine's prefix cache shares the
prompt's blocks, every path is seen as soon as it ends, and any unfinished path can be aborted alone.
After each finished path a stopping rule (adaptive consistency's Beta rule) asks whether more paths
could still change the leader. When it says no, the running paths are aborted and no more are started.
At most `parallel` paths run at once, and never more than could be needed: as many as it would take to
settle the vote if every running and new path agreed with the current leader (a unanimous start runs
exactly `min_paths`; a split vote adds paths as it stays split).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guard.answers import Answer, cluster_answers, cluster_name, representative
from guard.confidence_abort import AbortRule, ConfidenceWatch
from guard.engine import Completion, Engine, GenerationResult, Prompt, SampleSpec
from guard.params import GuardParams


class StopReason(enum.Enum):
    # Adaptive sampling off: all num_paths sampled in one engine request.
    FIXED = "fixed"
    # The leader's probability of staying the leader reached the stop level.
    SETTLED = "settled"
    # max_paths finished without the vote settling.
    MAX_PATHS = "max_paths"


def leader_stays_probability(leader: int, runner_up: int) -> float:
    """P(p_leader > p_runner_up) under a uniform prior: P(X > 1/2) for X ~ Beta(leader + 1, runner_up + 1).

    For integer parameters, P(X <= 1/2) = P(Binomial(leader + runner_up + 1, 1/2) >= leader + 1), so the
    value is an exact binomial sum (adaptive consistency's Beta stopping criterion).
    """
    if leader < 0 or runner_up < 0:
        raise ValueError("counts must be non-negative")
    trials = leader + runner_up + 1
    at_most_leader = sum(math.comb(trials, j) for j in range(leader + 1))
    return at_most_leader / 2**trials


def ranked_clusters(answers: Sequence[Answer | None]) -> list[list[int]]:
    """Groups of equivalent answers, largest first; equal sizes by the answer's text, so the leader never
    depends on the order the paths finished in."""
    return sorted(cluster_answers(answers), key=lambda c: (-len(c), cluster_name(answers, c)))


@dataclass(frozen=True)
class StopRule:
    """Stop once at least `min_paths` paths finished and the leading answer keeps the lead with
    probability >= `level`; never go past `max_paths`."""

    min_paths: int
    max_paths: int
    level: float

    def check(self, answers: Sequence[Answer | None]) -> StopCheck:
        """The rule's verdict after these finished paths (None: a path without an answer, no vote)."""
        clusters = ranked_clusters(answers)
        leader = len(clusters[0]) if clusters else 0
        runner_up = len(clusters[1]) if len(clusters) > 1 else 0
        probability = leader_stays_probability(leader, runner_up) if leader else 0.0
        settled = len(answers) >= self.min_paths and leader > 0 and probability >= self.level
        return StopCheck(
            settled or len(answers) >= self.max_paths, settled, probability,
            answers[representative(answers, clusters[0])] if clusters else None, leader / len(answers) if answers else 0.0,
            leader, runner_up,
        )


    def paths_needed(self, check: StopCheck, finished: int) -> int:
        """The fewest paths that could settle the vote: `finished` plus as many more as it takes if every
        one of them agrees with the current leader (the cap when none can). Starting more than this
        could only be wasted, since the rule cannot stop sooner."""
        for total in range(max(finished, self.min_paths), self.max_paths + 1):
            extra = total - finished
            if leader_stays_probability(check.leader_votes + extra, check.runner_up_votes) >= self.level:
                return total
        return self.max_paths


@dataclass(frozen=True)
class StopCheck:
    stop: bool
    # Stopped by the rule rather than by the cap.
    settled: bool
    # The leader's probability of staying the leader (0 without any answer).
    leader_probability: float
    # The leading answer and its share of the finished paths.
    leader: Answer | None = None
    leader_share: float = 0.0
    # Votes of the leading and the second answer.
    leader_votes: int = 0
    runner_up_votes: int = 0


PathObserver = Callable[[int, Completion, "Answer | None", StopCheck], None]
# (index, tokens generated) of a path aborted because its confidence collapsed.
AbortObserver = Callable[[int, int], None]


def each_observer(*observers: PathObserver | None) -> PathObserver | None:
    """One path observer that calls each of these."""
    chosen = [o for o in observers if o is not None]
    if not chosen:
        return None

    def observe(*args) -> None:
        for observer in chosen:
            observer(*args)

    return observe


@dataclass(frozen=True)
class SamplingReport:
    """How the paths of one request were sampled (what the response's `sampling` says)."""

    adaptive: bool
    stop_reason: StopReason
    # Paths the plan allowed (num_paths), started, finished (the ones that vote), and aborted unfinished
    # when the vote settled.
    max_paths: int
    started: int
    finished: int
    aborted: int
    # The leader's probability of staying the leader when sampling stopped (adaptive only).
    leader_probability: float = 0.0
    # Online DeepConf: paths aborted because their confidence collapsed, and the threshold (None: off,
    # or the warm-up never finished).
    aborted_low_confidence: int = 0
    confidence_threshold: float | None = None
    # Tokens the low-confidence paths had generated when they were aborted.
    low_confidence_tokens: int = 0

    @property
    def not_started(self) -> int:
        return self.max_paths - self.started

    def tokens_saved(self, mean_path_tokens: float) -> float:
        """Generated tokens saved against the fixed-N plan, estimated with the finished paths' mean length:
        each path never started saves a mean path; each path aborted for low confidence saves what a mean
        path has past the tokens it had generated (nothing when it was already longer)."""
        never_started = self.not_started * mean_path_tokens if self.adaptive else 0.0
        cut_tails = max(0.0, self.aborted_low_confidence * mean_path_tokens - self.low_confidence_tokens)
        return never_started + cut_tails

    @classmethod
    def fixed(cls, num_paths: int) -> SamplingReport:
        return cls(False, StopReason.FIXED, num_paths, num_paths, num_paths, 0)


@dataclass(frozen=True)
class PathPlan:
    """How a request's paths are streamed: the stopping rule, how many run at once, and the confidence
    watch (online DeepConf) if any."""

    rule: StopRule
    parallel: int
    watch: ConfidenceWatch | None
    adaptive: bool

    @staticmethod
    def streams(params: GuardParams, streamed: bool) -> bool:
        """Whether the paths are sampled one engine request each: for adaptive sampling, the confidence
        abort or streamed events; else all num_paths go in one engine request."""
        return streamed or (params.num_paths > 1 and (params.adaptive or params.confidence_abort))

    @classmethod
    def of(cls, params: GuardParams, streamed: bool) -> PathPlan | None:
        """None: all num_paths in one engine request (see `streams`). Without adaptive sampling all
        num_paths run at once and the vote never stops them."""
        if not cls.streams(params, streamed):
            return None
        n = params.num_paths
        adaptive = params.adaptive and n > 1
        watched = params.confidence_abort and n > 1
        watch = ConfidenceWatch(AbortRule(params.confidence_warmup, params.confidence_keep)) if watched else None
        if adaptive:
            return cls(StopRule(min(params.min_paths, n), n, params.stop_level), params.parallel_paths, watch, True)
        return cls(StopRule(n, n, 1.0), n, watch, False)

    def report(self, report: SamplingReport) -> SamplingReport:
        if self.adaptive:
            return report
        return dataclasses.replace(report, adaptive=False, stop_reason=StopReason.FIXED, leader_probability=0.0)


@dataclass(frozen=True)
class StreamedPaths:
    """The finished paths, in start order, as one GenerationResult (so the rest of the pipeline reads
    them as it reads one n=N request), and the report."""

    result: GenerationResult
    report: SamplingReport


async def sample_stream(
    engine: Engine,
    prompt: Prompt,
    spec: SampleSpec,
    request_id: str,
    rule: StopRule,
    parallel: int,
    read_answer: Callable[[str, bool], Answer | None],
    on_path: PathObserver | None = None,
    watch: ConfidenceWatch | None = None,
    on_abort: AbortObserver | None = None,
) -> StreamedPaths:
    """Sample up to `rule.max_paths` single-path requests, `parallel` at a time, until `rule` stops.

    Path i is sampled with seed `spec.seed + i` (when seeded), so a request's paths are reproducible
    whatever order they finish in. `read_answer(text, truncated)` reads a finished path's answer for the
    stopping rule; `on_path(index, completion, answer, check)` sees each finished path with the rule's
    verdict after it. With a `watch`, each path is streamed token by token and aborted once its
    confidence collapses (`on_abort(index, tokens)` sees it); aborted paths free their slot but count
    against `rule.max_paths`. Cancelling the caller aborts every running path.
    """
    running: dict[asyncio.Future[GenerationResult], int] = {}
    finished: dict[int, GenerationResult] = {}
    dropped: dict[int, GenerationResult] = {}
    answers: list[Answer | None] = []
    started = 0
    check = StopCheck(False, False, 0.0)

    def start_one() -> None:
        nonlocal started
        seed = None if spec.seed is None else spec.seed + started
        path_spec = dataclasses.replace(spec, n=1, seed=seed)
        path = (engine.generate(prompt, path_spec, request_id) if watch is None
                else watch.follow(engine.stream(prompt, path_spec, request_id)))
        running[asyncio.ensure_future(path)] = started
        started += 1

    def may_start(needed: int) -> bool:
        # Aborted paths free their slot; the cap counts them.
        return (not check.stop and len(running) < parallel and started - len(dropped) < needed
                and started < rule.max_paths)

    try:
        while started < min(parallel, rule.paths_needed(check, 0)):
            start_one()
        while running and not check.stop:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            # Start order, so equal inputs give equal answers lists whatever the timing.
            batch = []
            for task in sorted(done, key=running.__getitem__):
                index = running.pop(task)
                result = task.result()
                if not result.completions:
                    dropped[index] = result
                    if on_abort is not None:
                        on_abort(index, result.aborted_tokens)
                    continue
                finished[index] = result
                completion = result.completions[0]
                if watch is not None:
                    watch.finished(index, completion)
                answers.append(read_answer(completion.text, completion.truncated))
                batch.append((index, completion, answers[-1]))
            # Off the loop: clustering may call math-verify.
            check = await asyncio.to_thread(rule.check, list(answers))
            for index, completion, answer in batch if on_path is not None else ():
                on_path(index, completion, answer, check)
            needed = rule.paths_needed(check, len(answers))
            while may_start(needed):
                start_one()
    finally:
        aborted = len(running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    reason = StopReason.SETTLED if check.settled else StopReason.MAX_PATHS
    report = SamplingReport(
        True, reason, rule.max_paths, started, len(finished), aborted, check.leader_probability,
        len(dropped), watch.threshold if watch is not None else None,
        sum(r.aborted_tokens for r in dropped.values()),
    )
    return StreamedPaths(_merge([finished[i] for i in sorted(finished)], list(dropped.values())), report)


def _merge(results: Sequence[GenerationResult], dropped: Sequence[GenerationResult]) -> GenerationResult:
    """The finished paths as one result; the dropped ones add their prompts and the tokens they generated."""
    every = [*results, *dropped]
    return GenerationResult(
        [c for r in results for c in r.completions],
        prompt_tokens=sum(r.prompt_tokens for r in every),
        cached_prompt_tokens=sum(r.cached_prompt_tokens for r in every),
        aborted_tokens=sum(r.aborted_tokens for r in every),
    )
