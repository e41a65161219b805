"""Probing each path as soon as it ends, while the other paths are still being sampled.

When paths are sampled one engine request each (adaptive sampling, the confidence abort, streamed
events), a finished path's probes need nothing but the path and the sub-questions. Once both are known
they start at once, so they share the engine's batches with the paths still being generated instead of
waiting for the last path. The consistency stage then takes them over and probes only what is left.

Probes are keyed by the path's text: equal texts get the same greedy probe answers, so two equal
paths share one set of probes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from guard.answers import Answer
from guard.engine import Completion
from guard.probe import ProbeOutcome
from guard.result import PhaseUsage
from guard.sampling import StopCheck

# probe(path_text, sub_questions, usage): the probes of one path.
ProbeOne = Callable[[str, tuple[str, ...], PhaseUsage], Awaitable[ProbeOutcome]]


class ProbeAhead:
    """The early probes of one request: started per finished path once the sub-questions are known."""

    def __init__(self, probe: ProbeOne) -> None:
        self._probe = probe
        self.sub_questions: tuple[str, ...] | None = None
        self._texts: list[str] = []
        self._tasks: dict[str, asyncio.Task[ProbeOutcome]] = {}
        self.usage = PhaseUsage()

    def know(self, sub_questions: Sequence[str]) -> None:
        """The sub-questions are known: probe every path that has already ended."""
        if self.sub_questions is not None or not sub_questions:
            return
        self.sub_questions = tuple(sub_questions)
        for text in self._texts:
            self._start(text)

    def ars_done(self, task: asyncio.Future) -> None:
        """Done-callback of the ARS task (a StageOutcome of an ArsOutcome)."""
        if task.cancelled() or task.exception() is not None:
            return
        outcome = task.result().value
        if outcome is not None:
            self.know(outcome.sub_questions)

    def path_finished(self, index: int, completion: Completion, answer: Answer | None, check: StopCheck) -> None:
        """The sampler's path observer."""
        self._texts.append(completion.text)
        if self.sub_questions is not None:
            self._start(completion.text)

    def _start(self, text: str) -> None:
        if text not in self._tasks:
            self._tasks[text] = asyncio.ensure_future(self._probe(text, self.sub_questions, self.usage))

    def covers(self, sub_questions: Sequence[str]) -> bool:
        """Whether any early probe was started for these sub-questions."""
        return bool(self._tasks) and self.sub_questions == tuple(sub_questions)

    async def collect(self, texts: Sequence[str]) -> ProbeOutcome:
        """The probes of these paths, in this order: the early ones, and the rest started now; their
        usage is in `self.usage`."""
        for text in texts:
            self._start(text)
        by_text = dict(zip(self._tasks, await asyncio.gather(*self._tasks.values())))
        merged = merge_probes([by_text[text] for text in texts])
        # Equal paths shared one set of probes.
        merged.requests = sum(by_text[text].requests for text in dict.fromkeys(texts))
        return merged

    def cancel(self) -> None:
        """Cancel whatever is still running (the request ended or failed); retrieve failures so none
        is reported as never retrieved."""
        for task in self._tasks.values():
            if task.done():
                if not task.cancelled():
                    task.exception()
            else:
                task.cancel()


def merge_probes(outcomes: Sequence[ProbeOutcome]) -> ProbeOutcome:
    """Single-path probe outcomes, in path order, as one outcome over all the paths."""
    num_sub = len(outcomes[0].answers) if outcomes else 0
    prompts = [[o.prompts[k][0] for o in outcomes] for k in range(num_sub)]
    answers = [[o.answers[k][0] for o in outcomes] for k in range(num_sub)]
    surface: list[dict[str, str]] = []
    for k in range(num_sub):
        forms: dict[str, str] = {}
        for o in outcomes:
            for norm, raw in o.surface[k].items():
                forms.setdefault(norm, raw)
        surface.append(forms)
    asked = outcomes[0].asked if outcomes else []
    return ProbeOutcome(prompts, answers, surface, list(asked), sum(o.requests for o in outcomes))
