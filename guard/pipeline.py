"""The guarded request, end to end: validate, sample paths and obtain the ARS at once, probe, score, decide."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Awaitable, Iterator, TypeVar

from guard.answers import cluster_answers, extract_answer, path_values
from guard.ars import ArsCache, ArsOutcome, ars_cache_key, ars_seed, generate_ars
from guard.budget import Budget, StageCostModel
from guard.consistency import ArsAnalysis, analyze_ars
from guard.engine import Engine, GenerationResult, SampleSpec
from guard.errors import EngineError, InvalidArgumentError
from guard.images import decode_images
from guard.params import Defaults, GuardParams, Limits, Mode
from guard.policy import Policy, decide
from guard.probe import plan_scoring, probe_paths, score_candidates
from guard.prompts import ProbeFormat, PromptBuilder, PromptStyle
from guard.result import (
    ArsSource, Decision, GuardResult, PathResult, PhaseUsage, ProbeAnswerSource, SubQuestionResult,
)
from guard.scorers import SCORERS, ScoringInput, select
from guard.scorers.deepconf import path_confidence

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class GuardConfig:
    """Server-wide settings of the pipeline (per-request knobs live in GuardParams)."""

    defaults: Defaults = field(default_factory=Defaults)
    limits: Limits = field(default_factory=Limits)
    policy: Policy = field(default_factory=Policy)
    prompt_style: PromptStyle = PromptStyle.FEWSHOT
    # Top-k alternatives logged per sampled token, for DeepConf token confidence.
    logprobs_top_k: int = 5
    ars_max_tokens: int = 200
    # When the greedy ARS has no usable sub-question, sample this many more in one call (0: no retry).
    ars_retry_samples: int = 4
    probe_max_tokens: int = 12
    # How probes put sub-questions to the paths (see ProbeFormat): `continue` reuses each path's cached
    # tokens and hides its final answer; `legacy` stays the default until the comparison is measured.
    probe_format: ProbeFormat = ProbeFormat.LEGACY
    ars_cache_entries: int = 1024
    # Log each request's question and answer (off by default: request text stays out of logs).
    log_request_text: bool = False


class _Clock:
    """Stage timings and the time the pipeline spent blocked on the engine."""

    def __init__(self) -> None:
        self.timings_ms: dict[str, float] = {}
        self.engine_wait_ms = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_ms[name] = self.timings_ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    async def engine(self, awaitable: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.engine_wait_ms += (time.perf_counter() - start) * 1e3


def _truncated(result: GenerationResult) -> int:
    return sum(1 for c in result.completions if c.truncated)


def _mean_logprob(token_logprobs: list[float]) -> float:
    return sum(token_logprobs) / len(token_logprobs) if token_logprobs else 0.0


class GuardPipeline:
    def __init__(self, engine: Engine, config: GuardConfig | None = None):
        self.engine = engine
        self.config = config or GuardConfig()
        self.ars_cache = ArsCache(self.config.ars_cache_entries)
        self.prompts = PromptBuilder(self.config.prompt_style, engine.render_chat, self.config.probe_format)
        self.costs = StageCostModel()

    async def run(self, params: GuardParams) -> GuardResult:
        """Guard one request. Cancelling the calling task aborts every engine request it started."""
        if not params.request_id:
            params = params.with_request_id(uuid.uuid4().hex)
        try:
            return await self._run(params)
        except asyncio.CancelledError:
            await asyncio.shield(self.engine.abort(params.request_id))
            raise

    async def _run(self, params: GuardParams) -> GuardResult:
        clock = _Clock()
        rid = params.request_id
        start = time.perf_counter()
        budget = Budget.from_ms(params.latency_budget_ms)
        with clock.stage("validate"):
            images = await self._decode_images(params)
        if params.mode is Mode.RAW:
            result = await self._raw(params, images, clock)
        else:
            result = await self._guard(params, images, clock, budget)
        clock.timings_ms["total"] = (time.perf_counter() - start) * 1e3
        result.timings_ms = clock.timings_ms
        result.engine_wait_ms = clock.engine_wait_ms
        logger.info(
            "request %s: mode=%s decision=%s confidence=%.3f total_ms=%.0f%s",
            rid, params.mode.value, result.decision.value, result.confidence, clock.timings_ms["total"],
            f" degraded={','.join(result.degraded_stages)}" if result.degraded_stages else "",
        )
        if self.config.log_request_text:
            logger.info(
                "request %s text: question=%r answer=%r",
                rid, params.question[:500], result.answer.raw if result.answer else None,
            )
        return result

    async def _decode_images(self, params: GuardParams) -> list[object]:
        if not params.images:
            return []
        if not self.engine.info().accepts_images:
            raise InvalidArgumentError("images", f"model {self.engine.info().name} does not accept images")
        return await asyncio.to_thread(decode_images, params.images, self.config.limits)

    def _sample_spec(self, params: GuardParams, n: int) -> SampleSpec:
        return SampleSpec(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=params.seed,
            stop=self.prompts.path_stop,
            logprobs=self.config.logprobs_top_k,
        )

    def _paths(self, params: GuardParams, sampled: GenerationResult) -> list[PathResult]:
        return [
            PathResult(
                index=i,
                text=c.text,
                # A path cut off by max_tokens never reached its conclusion; the last number in it
                # is not an answer, so it may not vote.
                answer=extract_answer(c.text) if not c.truncated else None,
                num_tokens=c.num_tokens,
                finish_reason=c.finish_reason,
                mean_token_logprob=_mean_logprob(c.token_logprobs),
                path_values=path_values(c.text),
            )
            for i, c in enumerate(sampled.completions)
        ]

    async def _raw(self, params: GuardParams, images: list[object], clock: _Clock) -> GuardResult:
        prompt = self.prompts.path_prompt(params.question, params.system_prompt, images)
        with clock.stage("sample"):
            sampled = await clock.engine(self.engine.generate(prompt, self._sample_spec(params, 1), params.request_id))
        with clock.stage("extract"):
            paths = await asyncio.to_thread(self._paths, params, sampled)
        path = paths[0]
        return GuardResult(
            request_id=params.request_id,
            mode=Mode.RAW,
            decision=Decision.RAW,
            answer=path.answer,
            # Geometric-mean token probability: the only confidence one sample offers.
            confidence=math.exp(path.mean_token_logprob) if path.num_tokens else 0.0,
            model=self.engine.info().name,
            scorer="",
            vote_share=1.0 if path.answer else 0.0,
            paths=paths,
            usage={"sample": PhaseUsage(sampled.prompt_tokens, sampled.generated_tokens, sampled.cached_prompt_tokens,
                                        _truncated(sampled))},
        )

    async def _obtain_ars(self, params: GuardParams, images: list[object], usage: PhaseUsage) -> ArsOutcome:
        if params.sub_questions:
            return ArsOutcome(list(params.sub_questions), ArsSource.REQUEST)
        key = ars_cache_key(params.question, params.images)
        cached = self.ars_cache.get(key)
        if cached is not None:
            return ArsOutcome(cached, ArsSource.CACHE)
        outcome = await generate_ars(
            self.engine, self.prompts, params.question, images,
            self.config.limits.max_sub_questions, self.config.ars_max_tokens, params.request_id, usage,
            retry_samples=self.config.ars_retry_samples, seed=ars_seed(params.question, params.images),
        )
        if outcome.sub_questions:
            self.ars_cache.put(key, outcome.sub_questions)
        return outcome

    async def _guard(self, params: GuardParams, images: list[object], clock: _Clock, budget: Budget) -> GuardResult:
        rid = params.request_id
        scorer = SCORERS[params.scorer]
        usage = {"sample": PhaseUsage()}
        notes: list[str] = []
        degraded: list[str] = []
        prompt = self.prompts.path_prompt(params.question, params.system_prompt, images)
        # Paths and the ARS are independent: start both now so ARS generation adds no serial latency.
        sample_task = asyncio.ensure_future(
            self.engine.generate(prompt, self._sample_spec(params, params.num_paths), rid)
        )
        ars_task = None
        if scorer.uses_ars:
            usage["ars"] = PhaseUsage()
            ars_task = asyncio.ensure_future(self._timed_ars(params, images, usage["ars"], clock))
        try:
            with clock.stage("sample"):
                sampled = await clock.engine(sample_task)
            usage["sample"].add(sampled.prompt_tokens, sampled.generated_tokens, sampled.cached_prompt_tokens,
                                _truncated(sampled))
            with clock.stage("extract"):
                paths = await asyncio.to_thread(self._paths, params, sampled)
            ars_outcome = None
            if ars_task is not None:
                ars_outcome = await self._within_budget(clock.engine(ars_task), budget)
                if ars_outcome is None:
                    ars_task = None  # cancelled by _within_budget
                    degraded.append("ars")
                    notes.append(
                        f"latency budget: ARS generation cut short after sampling "
                        f"({params.latency_budget_ms} ms budget); answer-only consistency"
                    )
        except BaseException:
            for task in (sample_task, ars_task):
                if task is not None:
                    task.cancel()
            raise

        analysis = None
        if ars_outcome is not None and ars_outcome.sub_questions:
            analysis = await self._probe_and_score(
                params, images, paths, ars_outcome.sub_questions, usage, clock, budget, notes, degraded
            )
        if analysis is not None and not analysis.informative:
            _note_uninformative(analysis, notes, degraded)
        with clock.stage("decide"):
            top_logprobs = [c.top_logprobs for c in sampled.completions]
            result = self._decide(params, paths, top_logprobs, analysis, usage, notes)
        result.degraded_stages = degraded
        if ars_outcome is not None:
            result.ars_source = ars_outcome.source if analysis is not None else ArsSource.NONE
            result.ars_error = ars_outcome.error
        return result

    async def _within_budget(self, awaitable: Awaitable[T], budget: Budget) -> T | None:
        """Await within what is left of the budget; None (and the work cancelled) when it runs out.

        Cancelling a stage cancels its engine calls, which aborts their engine requests.
        """
        if not budget.limited:
            return await awaitable
        task = asyncio.ensure_future(awaitable)
        remaining = budget.remaining_ms()
        if remaining > 0:
            done, _ = await asyncio.wait([task], timeout=remaining / 1e3)
            if done:
                return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    def _fits(self, stage: str, items: int, budget: Budget) -> tuple[bool, float, float | None]:
        remaining = budget.remaining_ms()
        expected = self.costs.estimate_ms(stage, items)
        fits = remaining > 0 and (expected is None or expected <= remaining)
        return fits, remaining, expected

    async def _timed_ars(self, params, images, usage: PhaseUsage, clock: _Clock) -> ArsOutcome:
        start = time.perf_counter()
        try:
            return await self._obtain_ars(params, images, usage)
        except EngineError as exc:
            # The ARS only refines the confidence: without it the guard still answers (answer-only
            # consistency, ars_error says why). A dead engine fails the sampling anyway.
            logger.warning("request %s: ARS generation failed: %s", params.request_id, exc)
            return ArsOutcome([], ArsSource.NONE, f"ARS generation failed: {exc}")
        finally:
            # Runs concurrently with sampling, so it is a timing of its own, not part of "sample".
            clock.timings_ms["ars"] = (time.perf_counter() - start) * 1e3

    async def _probe_and_score(
        self, params: GuardParams, images, paths: list[PathResult], sub_questions: list[str],
        usage: dict[str, PhaseUsage], clock: _Clock, budget: Budget, notes: list[str], degraded: list[str],
    ) -> ArsAnalysis | None:
        """Probe every path with every sub-question, then score the candidates; under a budget, skip or
        cut short what does not fit (no probes: answer-only; no scores: hard agreement only)."""
        n_probe = len(paths) * len(sub_questions)
        fits, remaining, expected = self._fits("probe", n_probe, budget)
        if not fits:
            degraded += ["probe", "score"]
            notes.append(f"latency budget: skipped probing and scoring ({_budget_note(remaining, expected)}); "
                         "answer-only consistency")
            return None
        usage["probe"] = PhaseUsage()
        start = time.perf_counter()
        try:
            with clock.stage("probe"):
                probes = await self._within_budget(
                    clock.engine(
                        probe_paths(
                            self.engine, self.prompts, params.question, [p.text for p in paths], sub_questions,
                            system_prompt=params.system_prompt, images=images,
                            max_tokens=self.config.probe_max_tokens, request_id=params.request_id,
                            usage=usage["probe"],
                        )
                    ),
                    budget,
                )
        except InvalidArgumentError as exc:
            # Probe prompts carry a whole path; when one no longer fits the context the guard answers
            # without the ARS instead of failing a request whose own prompt fitted.
            degraded += ["probe", "score"]
            notes.append(f"probing skipped: probe prompts do not fit the model's context ({exc.message})")
            return None
        if probes is None:
            degraded += ["probe", "score"]
            notes.append("latency budget: probing cut short; answer-only consistency")
            return None
        self.costs.observe("probe", n_probe, (time.perf_counter() - start) * 1e3)

        plan = plan_scoring(self.prompts, probes, params.score_mode)
        usage["score"] = PhaseUsage()
        soft = None
        fits, remaining, expected = self._fits("score", len(plan.items), budget)
        with clock.stage("score"):
            if not plan.items:
                soft = plan.base
            elif not fits:
                degraded.append("score")
                notes.append(f"latency budget: skipped scoring ({_budget_note(remaining, expected)}); "
                             "hard sub-question agreement only")
            else:
                start = time.perf_counter()
                soft = await self._within_budget(
                    clock.engine(score_candidates(self.engine, plan, request_id=params.request_id,
                                                  usage=usage["score"])),
                    budget,
                )
                if soft is None:
                    degraded.append("score")
                    notes.append("latency budget: scoring cut short; hard sub-question agreement only")
                else:
                    self.costs.observe("score", len(plan.items), (time.perf_counter() - start) * 1e3)
        return analyze_ars(
            sub_questions, probes.answers, soft,
            final_answers=[p.answer.normalized if p.answer else "" for p in paths],
            question=params.question, ffs_threshold=self.config.policy.ffs_agreement,
        )

    def _decide(
        self, params: GuardParams, paths: list[PathResult], top_logprobs: list[list[list[float]]],
        analysis: ArsAnalysis | None, usage: dict[str, PhaseUsage], notes: list[str],
    ) -> GuardResult:
        answers = [p.answer for p in paths]
        clusters = cluster_answers(answers)
        inp = ScoringInput(answers=answers, clusters=clusters, top_logprobs=top_logprobs, ars=analysis)
        scorer = SCORERS[params.scorer]
        selection = select(scorer, inp)
        winner_paths = list(clusters[selection.winner]) if selection.winner is not None else []
        verdict = decide(selection, analysis, winner_paths, params.scorer, self.config.policy)
        support = analysis.filled_support() if analysis is not None else None
        for p in paths:
            p.score = selection.path_weights[p.index]
            p.in_winning_cluster = p.index in winner_paths
            if analysis is not None:
                p.support = support[p.index]
                p.first_failure_step = analysis.first_failure_step[p.index]
        table = []
        if analysis is not None:
            for k in range(len(analysis.sub_questions)):
                sources = [_answer_source(a, paths[i]) for i, a in enumerate(analysis.path_answers[k])]
                table.append(SubQuestionResult(
                    sub_question=analysis.sub_questions[k],
                    modal_answer=analysis.modal[k],
                    agreement=analysis.agreement[k],
                    soft_agreement=analysis.soft_agreement[k],
                    path_answers=analysis.path_answers[k],
                    answered=analysis.answered[k],
                    echo=analysis.echo[k],
                    echo_paths=sources.count(ProbeAnswerSource.FINAL_ANSWER),
                    from_path_values=sources.count(ProbeAnswerSource.PATH_VALUE),
                    path_answer_sources=sources,
                ))
        winner_answer = paths[winner_paths[0]].answer if winner_paths else None
        features = {"vote_share": selection.vote_share, "weighted_share": selection.weighted_share,
                    "margin": selection.margin}
        if winner_paths:
            if analysis is not None:
                step_agreement = analysis.agreement_among(winner_paths)
                if step_agreement is not None:
                    features["ars_agreement"] = step_agreement
                known = [analysis.support[i] for i in winner_paths if analysis.support[i] is not None]
                if known:
                    features["support"] = sum(known) / len(known)
            if top_logprobs and any(top_logprobs):
                features["token_confidence"] = sum(path_confidence(top_logprobs[i]) for i in winner_paths) / len(
                    winner_paths
                )
        return GuardResult(
            request_id=params.request_id,
            mode=Mode.GUARD,
            decision=verdict.decision,
            answer=winner_answer,
            confidence=selection.confidence,
            model=self.engine.info().name,
            scorer=params.scorer,
            abstain_reason=verdict.abstain_reason,
            region=verdict.region,
            vote_share=selection.vote_share,
            threshold=verdict.threshold,
            paths=paths,
            sub_questions=table,
            usage=usage,
            notes=notes,
            features=features,
            scoring=inp,
        )


def _answer_source(answer: str, path: PathResult) -> ProbeAnswerSource | None:
    """Where a path's normalised probe answer comes from: a restatement of its own final answer is
    kept as the answer (the probe may be right that the step's value is the final one) but told apart."""
    if not answer:
        return None
    if path.answer is not None and answer == path.answer.normalized:
        return ProbeAnswerSource.FINAL_ANSWER
    if answer in path.path_values:
        return ProbeAnswerSource.PATH_VALUE
    return ProbeAnswerSource.OTHER


def _note_uninformative(analysis: ArsAnalysis, notes: list[str], degraded: list[str]) -> None:
    """Say why the sub-questions could not weigh the paths (consistency is then the plain vote)."""
    if not any(analysis.answered):
        degraded.append("probe")
        notes.append("no probe answer could be read (all cut or unreadable); answer-only consistency")
    else:
        notes.append(
            f"no informative sub-question ({analysis.num_echo} of {len(analysis.sub_questions)} echo the "
            "final answer or the question, the rest have no agreed mode); answer-only consistency"
        )


def _budget_note(remaining_ms: float, expected_ms: float | None) -> str:
    left = f"{max(0.0, remaining_ms):.0f} ms of the budget left"
    return left if expected_ms is None else f"{left}, about {expected_ms:.0f} ms needed"

