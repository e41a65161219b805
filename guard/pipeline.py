"""The guarded request, end to end: validate, sample paths and obtain the ARS at once, probe, score, decide."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass, field, replace

from guard.answers import Answer, extract_answer, path_values
from guard.ars import ArsCache, ArsOutcome
from guard.ars_stage import ArsStage
from guard.assemble import decide_paths
from guard.budget import Budget, StageCostModel
from guard.engine import Engine, GenerationResult, Prompt, SampleSpec
from guard.engine.tokens import require_image_support
from guard.events import EventSink, EventStream
from guard.images import decode_images
from guard.params import Defaults, GuardParams, Limits, Mode
from guard.policy import Policy
from guard.probe import ProbeRead
from guard.probe_ahead import ProbeAhead
from guard.prompts import ProbeFormat, PromptBuilder, PromptStyle
from guard.refine import ANSWER_ONLY, ConsistencyStage
from guard.result import ArsSource, Decision, GuardResult, PathResult, PhaseUsage
from guard.sampling import PathPlan, SamplingReport, each_observer, sample_stream
from guard.scorers import SCORERS
from guard.stages import Stage, StageClock, StageOutcome, within_budget
from guard.token_budget import TokenPlan, plan_sampling, probes_fit

logger = logging.getLogger(__name__)


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
    # 24: cuts 0.4% of probes against 23% at 12, for 5% more probe time (benchmarks/README.md, "Probes").
    probe_max_tokens: int = 24
    # How probes put sub-questions to the paths (see ProbeFormat): `continue` reuses each path's cached
    # tokens and hides its final answer; measured cheaper (0.30x against 0.57x the sample time) and
    # reading the path's value more often (67% against 50%) than `legacy`, which stays selectable.
    probe_format: ProbeFormat = ProbeFormat.CONTINUE
    # How a probe's answer is read: its greedy value, or the likeliest of the values the path wrote
    # (`values` costs 1.8x the sample time on CPU and read no better: not the default).
    probe_read: ProbeRead = ProbeRead.GREEDY
    # Sample the paths of a request that probes one engine request each, so each path's probes start as
    # soon as it ends (guard.probe_ahead) instead of after the last path; see benchmarks/README.md.
    probe_ahead: bool = False
    ars_cache_entries: int = 1024
    # Log each request's question and answer (off by default: request text stays out of logs).
    log_request_text: bool = False


def _truncated(result: GenerationResult) -> int:
    return sum(1 for c in result.completions if c.truncated)


def _read_answer(text: str, truncated: bool) -> Answer | None:
    # A path cut off by max_tokens never reached its conclusion; the last number in it is not an
    # answer, so it may not vote.
    return None if truncated else extract_answer(text)


def _mean_logprob(token_logprobs: list[float]) -> float:
    return sum(token_logprobs) / len(token_logprobs) if token_logprobs else 0.0


def _usage(result: GenerationResult) -> PhaseUsage:
    return PhaseUsage(result.prompt_tokens, result.generated_tokens, result.cached_prompt_tokens,
                      _truncated(result))


@dataclass(frozen=True)
class _Sampled:
    """The sampling stage's outcome: the paths, their token logprobs, and the ARS that came alongside."""

    paths: list[PathResult]
    top_logprobs: list[list[list[float]]]
    usage: PhaseUsage
    ars: StageOutcome[ArsOutcome] | None
    report: SamplingReport


class GuardPipeline:
    def __init__(self, engine: Engine, config: GuardConfig | None = None):
        self.engine = engine
        self.config = config or GuardConfig()
        self.ars_cache = ArsCache(self.config.ars_cache_entries)
        self.prompts = PromptBuilder(self.config.prompt_style, engine.render_chat, self.config.probe_format)
        self._plain_prompts = replace(self.prompts, probe_format=ProbeFormat.LEGACY)
        self.ars = ArsStage(engine, self.prompts, self.ars_cache, self.config.limits.max_sub_questions,
                            self.config.ars_max_tokens, self.config.ars_retry_samples)
        self.costs = StageCostModel()
        self.consistency = ConsistencyStage(
            engine, self.prompts, self.costs, self.config.probe_max_tokens, self.config.policy.ffs_agreement,
            self.config.probe_read,
        )

    async def run(self, params: GuardParams, events: EventSink | None = None) -> GuardResult:
        """Guard one request. Cancelling the calling task aborts every engine request it started.

        With `events`, the request reports as it goes (guard.events): the first answer (provisional),
        each finished path, the sub-questions and progress. Its paths are then sampled one engine
        request each (as vLLM samples the children of an n=N request: seed + i), so they can be seen
        as they finish."""
        if not params.request_id:
            params = params.with_request_id(uuid.uuid4().hex)
        try:
            return await self._run(params, EventStream(events) if events is not None else None)
        except asyncio.CancelledError:
            await asyncio.shield(self.engine.abort(params.request_id))
            raise

    async def _run(self, params: GuardParams, events: EventStream | None) -> GuardResult:
        clock = StageClock()
        budget = Budget.from_ms(params.latency_budget_ms)
        with clock.stage(Stage.VALIDATE):
            images = await self._decode_images(params)
        if params.mode is Mode.RAW:
            result = await self._raw(params, images, clock, events)
        else:
            result = await self._guard(params, images, clock, budget, events)
        self._log(params, result)
        return result

    def _log(self, params: GuardParams, result: GuardResult) -> None:
        rid = params.request_id
        logger.info(
            "request %s: mode=%s decision=%s confidence=%.3f total_ms=%.0f%s",
            rid, params.mode.value, result.decision.value, result.confidence, result.timings_ms[Stage.TOTAL],
            f" degraded={','.join(result.degraded_stages)}" if result.degraded_stages else "",
        )
        if self.config.log_request_text:
            logger.info(
                "request %s text: question=%r answer=%r",
                rid, params.question[:500], result.answer.raw if result.answer else None,
            )

    async def _decode_images(self, params: GuardParams) -> list[object]:
        if not params.images:
            return []
        info = self.engine.info()
        require_image_support(True, accepts_images=info.accepts_images, model_name=info.name, field="images")
        return await asyncio.to_thread(decode_images, params.images, self.config.limits)

    def path_prompts(self, params: GuardParams) -> PromptBuilder:
        """The prompts a request's paths are sampled with. Only a request that probes needs the continue
        format's sampling prompt (its probes extend it); the others get the plain few-shot prompt, whose
        paths were right 7.7 points more often (benchmarks/README.md, "The continue format's sampling
        prompt")."""
        probes = params.mode is Mode.GUARD and SCORERS[params.scorer].uses_ars
        return self.prompts if probes else self._plain_prompts

    def sample_spec(self, params: GuardParams, n: int) -> SampleSpec:
        return SampleSpec(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=params.seed,
            stop=self.path_prompts(params).path_stop,
            logprobs=self.config.logprobs_top_k,
        )

    def read_paths(self, sampled: GenerationResult) -> list[PathResult]:
        return [
            PathResult(
                index=i,
                text=c.text,
                answer=_read_answer(c.text, c.truncated),
                num_tokens=c.num_tokens,
                finish_reason=c.finish_reason,
                mean_token_logprob=_mean_logprob(c.token_logprobs),
                path_values=path_values(c.text),
            )
            for i, c in enumerate(sampled.completions)
        ]

    async def _raw(self, params: GuardParams, images: list[object], clock: StageClock,
                   events: EventStream | None) -> GuardResult:
        prompt = self.path_prompts(params).path_prompt(params.question, params.system_prompt, images)
        with clock.stage(Stage.SAMPLE):
            sampled = await clock.engine(self.engine.generate(prompt, self.sample_spec(params, 1), params.request_id))
        with clock.stage(Stage.EXTRACT):
            paths = await asyncio.to_thread(self.read_paths, sampled)
        path = paths[0]
        if events is not None:
            events.path_finished(0, sampled.completions[0], path.answer, None)
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
            usage={Stage.SAMPLE: _usage(sampled)},
            timings_ms=clock.stop(),
            engine_wait_ms=clock.engine_wait_ms,
        )

    async def _guard(self, params: GuardParams, images: list[object], clock: StageClock, budget: Budget,
                     events: EventStream | None) -> GuardResult:
        plan = self._token_plan(params)
        sampling_params = params if plan.num_paths == params.num_paths else replace(params, num_paths=plan.num_paths)
        ahead = self._probe_ahead(sampling_params, images,
                                  streamed=events is not None or self._probes_as_paths_end(sampling_params))
        try:
            sampled = await self._sample(sampling_params, images, clock, budget, events, plan.ars_allowed, ahead)
            if events is not None:
                events.progress(Stage.SAMPLE, [p.answer for p in sampled.paths], sampled.report.stop_reason.value)
            ars = sampled.ars.value if sampled.ars is not None else None
            outcomes = [o for o in (plan.outcome, sampled.ars) if o is not None]
            analysis = None
            if ars is not None and ars.sub_questions:
                refined = await self._refine(params, images, sampled, ars.sub_questions, outcomes, clock, budget,
                                             events, ahead)
                outcomes.append(refined)
                analysis = refined.value
        finally:
            if ahead is not None:
                ahead.cancel()
        if events is not None:
            events.progress(Stage.DECIDE, [p.answer for p in sampled.paths])
        with clock.stage(Stage.DECIDE):
            decided = decide_paths(params.scorer, sampled.paths, sampled.top_logprobs, analysis, self.config.policy)
        usage = {Stage.SAMPLE: sampled.usage}
        for outcome in outcomes:
            usage.update(outcome.usage)
        return GuardResult(
            request_id=params.request_id,
            mode=Mode.GUARD,
            decision=decided.verdict.decision,
            answer=decided.answer,
            confidence=decided.selection.confidence,
            model=self.engine.info().name,
            scorer=params.scorer,
            abstain_reason=decided.verdict.abstain_reason,
            region=decided.verdict.region,
            vote_share=decided.selection.vote_share,
            threshold=decided.verdict.threshold,
            paths=decided.paths,
            sub_questions=decided.sub_questions,
            ars_source=ars.source if ars is not None and analysis is not None else ArsSource.NONE,
            ars_error=ars.error if ars is not None else "",
            usage=usage,
            timings_ms=clock.stop(),
            engine_wait_ms=clock.engine_wait_ms,
            notes=[note for o in outcomes for note in o.notes],
            degraded_stages=[stage for o in outcomes for stage in o.degraded],
            features=decided.features,
            scoring=decided.scoring,
            sampling=sampled.report,
        )

    async def _refine(self, params: GuardParams, images: list[object], sampled: _Sampled, sub_questions: list[str],
                      outcomes: list[StageOutcome], clock: StageClock, budget: Budget, events: EventStream | None,
                      ahead: ProbeAhead | None) -> StageOutcome:
        """Probe and score the sub-questions, unless the token budget leaves no room for the probes."""
        if events is not None:
            events.progress(Stage.PROBE, [p.answer for p in sampled.paths])
        spent = sum(u.generated_tokens for o in outcomes for u in o.usage.values()) + sampled.usage.generated_tokens
        fits, why = probes_fit(params.max_total_tokens, spent, len(sampled.paths) * len(sub_questions),
                               self.config.probe_max_tokens)
        if not fits:
            return StageOutcome.skipped(f"{why}; {ANSWER_ONLY}", Stage.PROBE, Stage.SCORE)
        return await self.consistency.run(params, images, sampled.paths, sub_questions, clock, budget, ahead)

    def _probes_as_paths_end(self, params: GuardParams) -> bool:
        """Whether `probe_ahead` has this request's paths sampled one by one: it probes, and no budget may
        yet skip probing."""
        return (self.config.probe_ahead and params.num_paths > 1 and SCORERS[params.scorer].uses_ars
                and params.latency_budget_ms is None and params.max_total_tokens is None)

    def _probe_ahead(self, params: GuardParams, images: list[object], streamed: bool) -> ProbeAhead | None:
        """Probe each path as it ends (guard.probe_ahead) when paths are sampled one by one and the scorer
        probes; not under a latency or token budget, which may yet skip probing."""
        if (not PathPlan.streams(params, streamed) or not SCORERS[params.scorer].uses_ars
                or params.latency_budget_ms is not None or params.max_total_tokens is not None):
            return None
        return ProbeAhead(lambda text, subs, usage: self.consistency.probe_batch(params, images, [text], subs, usage))

    def _token_plan(self, params: GuardParams) -> TokenPlan:
        """What `max_total_tokens` allows: paths, and whether the ARS may be generated (reserved up front)."""
        model_ars = (params.max_total_tokens is not None and SCORERS[params.scorer].uses_ars
                     and not params.sub_questions
                     and self.ars.cached(params) is None)
        reserve = self.config.ars_max_tokens * (1 + self.config.ars_retry_samples) if model_ars else 0
        return plan_sampling(params.max_total_tokens, params.num_paths, params.max_tokens, reserve)

    async def _sample(self, params: GuardParams, images: list[object], clock: StageClock, budget: Budget,
                      events: EventStream | None, ars_allowed: bool = True, ahead: ProbeAhead | None = None) -> _Sampled:
        """Sample the paths; at the same time obtain the ARS (independent of the paths, so it adds no serial
        latency), waiting for it after sampling only as long as the budget allows."""
        prompt = self.path_prompts(params).path_prompt(params.question, params.system_prompt, images)
        sample_task = asyncio.ensure_future(self._sample_paths(params, prompt, events, ahead))
        ars_task = None
        if SCORERS[params.scorer].uses_ars and ars_allowed:
            ars_task = asyncio.ensure_future(self.ars.timed(params, images, clock))
            for observer in (events, ahead):
                if observer is not None:
                    ars_task.add_done_callback(observer.ars_done)
        try:
            with clock.stage(Stage.SAMPLE):
                sampled, report = await clock.engine(sample_task)
            with clock.stage(Stage.EXTRACT):
                paths = await asyncio.to_thread(self.read_paths, sampled)
            ars = None
            if ars_task is not None:
                ars = await within_budget(clock.engine(ars_task), budget)
                if ars is None:
                    ars_task = None  # cancelled by within_budget
                    ars = StageOutcome.skipped(
                        f"latency budget: ARS generation cut short after sampling "
                        f"({params.latency_budget_ms} ms budget); {ANSWER_ONLY}", Stage.ARS,
                        usage={Stage.ARS: PhaseUsage()},
                    )
        except BaseException:
            for task in (sample_task, ars_task):
                if task is not None:
                    task.cancel()
            raise
        top_logprobs = [c.top_logprobs for c in sampled.completions]
        return _Sampled(paths, top_logprobs, _usage(sampled), ars, report)

    async def _sample_paths(
        self, params: GuardParams, prompt: Prompt, events: EventStream | None, ahead: ProbeAhead | None
    ) -> tuple[GenerationResult, SamplingReport]:
        """All num_paths in one engine request; or a stream of single paths, stopped once the vote settles
        (adaptive) or once all num_paths finished (streaming events, or probes started as paths end)."""
        plan = PathPlan.of(params, streamed=events is not None or ahead is not None)
        spec = self.sample_spec(params, params.num_paths)
        if plan is None:
            return await self.engine.generate(prompt, spec, params.request_id), SamplingReport.fixed(params.num_paths)
        streamed = await sample_stream(
            self.engine, prompt, spec, params.request_id, plan.rule, plan.parallel, _read_answer,
            on_path=each_observer(events.path_finished if events is not None else None,
                          ahead.path_finished if ahead is not None else None),
            watch=plan.watch, on_abort=events.path_aborted if events is not None else None,
        )
        return streamed.result, plan.report(streamed.report)
