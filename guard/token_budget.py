"""A request's token budget (`max_total_tokens`): tokens the engine may generate for it, all phases together.

The guard plans each phase against the worst case before it starts (every path writes max_tokens, the
ARS generation and its retry write their limit, every probe writes the probe limit), so the generated
tokens never exceed the budget: it samples fewer paths, skips ARS generation, or skips probing and
says which in `notes` and `degraded_stages`. Prompt tokens are not counted (mostly served from the
prefix cache, and unknown before the engine sees them); scoring generates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from guard.stages import Stage, StageOutcome


@dataclass(frozen=True)
class TokenPlan:
    """What the budget allows before the request starts."""

    num_paths: int
    ars_allowed: bool
    notes: tuple[str, ...] = ()
    # The paths the request asked for (num_paths is what the budget leaves of them).
    requested_paths: int = 0

    @property
    def outcome(self) -> StageOutcome[None] | None:
        """What the plan dropped, as a stage outcome (notes, degraded stages); None when nothing."""
        if not self.notes:
            return None
        degraded = ((Stage.ARS,) if not self.ars_allowed else ()) + ((Stage.SAMPLE,) if self.dropped_paths else ())
        return StageOutcome(None, {}, self.notes, degraded)

    @property
    def dropped_paths(self) -> bool:
        return self.num_paths < self.requested_paths


def plan_sampling(limit: int | None, num_paths: int, max_tokens: int, ars_reserve: int) -> TokenPlan:
    """Paths and ARS generation the budget can pay for at worst. `ars_reserve` is the most the ARS
    generation could write (0 when the ARS comes from the request or the cache). Sampling comes first:
    the ARS is dropped before any path is."""
    if limit is None:
        return TokenPlan(num_paths, True, (), num_paths)
    notes = []
    ars_allowed = ars_reserve == 0 or limit - ars_reserve >= max_tokens
    if not ars_allowed:
        notes.append(f"token budget: no ARS generation ({limit} tokens, it could write {ars_reserve} and a "
                     f"path {max_tokens}); answer-only consistency")
    room = limit - (ars_reserve if ars_allowed else 0)
    paths = min(num_paths, room // max_tokens)
    if paths < num_paths:
        notes.append(f"token budget: {paths} of {num_paths} paths ({limit} tokens, up to {max_tokens} a path"
                     + (f", {ars_reserve} kept for the ARS" if ars_allowed and ars_reserve else "") + ")")
    return TokenPlan(paths, ars_allowed, tuple(notes), num_paths)


def probes_fit(limit: int | None, spent: int, num_probes: int, probe_max_tokens: int) -> tuple[bool, str]:
    """Whether probing every path on every sub-question fits what is left; the note when it does not."""
    if limit is None:
        return True, ""
    worst = num_probes * probe_max_tokens
    if spent + worst <= limit:
        return True, ""
    return False, (f"token budget: skipped probing and scoring ({limit - spent} of {limit} tokens left, "
                   f"{num_probes} probes could write {worst})")
