"""The stage after sampling that turns sub-questions into consistency: probe every path, score, analyse."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from guard.budget import Budget, StageCostModel
from guard.consistency import ArsAnalysis, SoftAnswer, analyze_ars
from guard.engine import Engine
from guard.errors import InvalidArgumentError
from guard.params import GuardParams
from guard.probe import (
    ProbeOutcome,
    ProbeRead,
    plan_scoring,
    plan_value_reading,
    probe_paths,
    read_values,
    score_candidates,
    skipped,
)
from guard.probe_ahead import ProbeAhead
from guard.prompts import PromptBuilder
from guard.result import PathResult, PhaseUsage
from guard.stages import Stage, StageClock, StageOutcome, budget_note, within_budget

ANSWER_ONLY = "answer-only consistency"
HARD_ONLY = "hard sub-question agreement only"


@dataclass
class ConsistencyStage:
    """Probes and scores as few engine batches as the budget allows (no probes: answer-only; no scores:
    hard agreement only), then analyses the sub-question answers of all paths."""

    engine: Engine
    prompts: PromptBuilder
    costs: StageCostModel
    probe_max_tokens: int
    ffs_threshold: float
    probe_read: ProbeRead = ProbeRead.GREEDY
    # Equal probes sent once, restated questions not asked (False: all N x K, for comparison only).
    share_probes: bool = True

    async def run(
        self, params: GuardParams, images: Sequence[object], paths: list[PathResult], sub_questions: list[str],
        clock: StageClock, budget: Budget, ahead: ProbeAhead | None = None,
    ) -> StageOutcome[ArsAnalysis]:
        """`ahead`: probes already started while sampling (taken over when they asked these sub-questions)."""
        if ahead is not None and not ahead.covers(sub_questions):
            ahead = None
        probed = await self._probe(params, images, paths, sub_questions, clock, budget, ahead)
        if probed.value is None:
            return probed
        scored = await self._score(params, probed.value, clock, budget)
        analysis = analyze_ars(
            sub_questions, probed.value.answers, scored.value,
            final_answers=[p.answer.normalized if p.answer else "" for p in paths],
            question=params.question, ffs_threshold=self.ffs_threshold, asked=probed.value.asked,
        )
        notes, degraded = scored.notes, scored.degraded
        if not analysis.informative:
            note, lost = _uninformative(analysis)
            notes, degraded = (*notes, note), degraded + lost
        return StageOutcome(analysis, {**probed.usage, **scored.usage}, notes, degraded)

    def _fits(self, stage: Stage, items: int, budget: Budget) -> tuple[bool, str]:
        remaining = budget.remaining_ms()
        expected = self.costs.estimate_ms(stage, items)
        fits = remaining > 0 and (expected is None or expected <= remaining)
        return fits, budget_note(remaining, expected)

    async def _probe(self, params, images, paths, sub_questions, clock, budget,
                     ahead: ProbeAhead | None) -> StageOutcome[ProbeOutcome]:
        # The probes to send: equal paths share theirs, and restated questions are not asked.
        n_probe = len({p.text for p in paths}) * (len(sub_questions) - sum(skipped(params.question, sub_questions)))
        fits, why = self._fits(Stage.PROBE, n_probe, budget)
        if not fits:
            return StageOutcome.skipped(f"latency budget: skipped probing and scoring ({why}); {ANSWER_ONLY}",
                                        Stage.PROBE, Stage.SCORE)
        usage = PhaseUsage()
        start = time.perf_counter()
        try:
            with clock.stage(Stage.PROBE):
                probes = await within_budget(
                    clock.engine(self._ask(params, images, paths, sub_questions, usage, ahead)), budget)
        except InvalidArgumentError as exc:
            # Probe prompts carry a whole path; when one no longer fits the context the guard answers
            # without the ARS instead of failing a request whose own prompt fitted.
            return StageOutcome.skipped(
                f"probing skipped: probe prompts do not fit the model's context ({exc.message})",
                Stage.PROBE, Stage.SCORE, usage={Stage.PROBE: usage})
        if probes is None:
            return StageOutcome.skipped(f"latency budget: probing cut short; {ANSWER_ONLY}",
                                        Stage.PROBE, Stage.SCORE, usage={Stage.PROBE: usage})
        if ahead is None:
            # Early probes overlapped sampling: their wait says nothing about what probing costs.
            self.costs.observe(Stage.PROBE, n_probe, (time.perf_counter() - start) * 1e3)
        return StageOutcome(probes, {Stage.PROBE: usage})

    async def _ask(self, params: GuardParams, images, paths: list[PathResult], sub_questions: list[str],
                   usage: PhaseUsage, ahead: ProbeAhead | None) -> ProbeOutcome:
        """One batch of greedy probes (or the early ones and the rest); under ProbeRead.VALUES, then one
        batch scoring each path's values."""
        if ahead is not None:
            try:
                probes = await ahead.collect([p.text for p in paths])
            finally:
                usage.add(**vars(ahead.usage))
        else:
            probes = await self.probe_batch(params, images, [p.text for p in paths], sub_questions, usage)
        if self.probe_read is ProbeRead.GREEDY:
            return probes
        plan = plan_value_reading(self.prompts, probes, [p.path_values for p in paths])
        return await read_values(self.engine, plan, probes, request_id=params.request_id, usage=usage)

    async def probe_batch(self, params: GuardParams, images: Sequence[object], texts: Sequence[str],
                          sub_questions: Sequence[str], usage: PhaseUsage) -> ProbeOutcome:
        """Every sub-question of every path in one batch of greedy probes."""
        return await probe_paths(
            self.engine, self.prompts, params.question, texts, sub_questions,
            system_prompt=params.system_prompt, images=images, max_tokens=self.probe_max_tokens,
            request_id=params.request_id, usage=usage, share=self.share_probes,
        )

    async def _score(self, params, probes: ProbeOutcome, clock: StageClock,
                     budget: Budget) -> StageOutcome[list[list[SoftAnswer | None]]]:
        """Soft answers of every path; None (hard agreement only) when the budget leaves no room."""
        plan = plan_scoring(self.prompts, probes, params.score_mode)
        usage = {Stage.SCORE: PhaseUsage()}
        if not plan.items:
            clock.add(Stage.SCORE, 0.0)
            return StageOutcome(plan.base, usage)
        fits, why = self._fits(Stage.SCORE, len(plan.items), budget)
        if not fits:
            clock.add(Stage.SCORE, 0.0)
            return StageOutcome.skipped(f"latency budget: skipped scoring ({why}); {HARD_ONLY}", Stage.SCORE,
                                        usage=usage)
        start = time.perf_counter()
        with clock.stage(Stage.SCORE):
            soft = await within_budget(clock.engine(score_candidates(
                self.engine, plan, request_id=params.request_id, usage=usage[Stage.SCORE])), budget)
        if soft is None:
            return StageOutcome.skipped(f"latency budget: scoring cut short; {HARD_ONLY}", Stage.SCORE, usage=usage)
        self.costs.observe(Stage.SCORE, len(plan.items), (time.perf_counter() - start) * 1e3)
        return StageOutcome(soft, usage)


def _uninformative(analysis: ArsAnalysis) -> tuple[str, tuple[Stage, ...]]:
    """Why the sub-questions could not weigh the paths (consistency is then the plain vote)."""
    if not any(analysis.answered):
        return f"no probe answer could be read (all cut or unreadable); {ANSWER_ONLY}", (Stage.PROBE,)
    return (f"no informative sub-question ({analysis.num_echo} of {len(analysis.sub_questions)} echo the "
            f"final answer or the question, the rest have no agreed mode); {ANSWER_ONLY}"), ()
