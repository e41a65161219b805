"""Continue-format probes on the real engine: they extend each path's own cached tokens, so the prefix
cache serves nearly all of their prompt (issue 15), where legacy probes re-prefill the path."""

from __future__ import annotations

import logging

import pytest

from guard.params import GuardParams
from guard.pipeline import GuardConfig, GuardPipeline
from guard.prompts import ProbeFormat

logger = logging.getLogger(__name__)

PROBLEMS = [
    ("A baker makes 30 muffins and sells 12 of them. Then he bakes 8 more. How many muffins does he have now?",
     ("How many muffins are left after selling?", "How many muffins does he have now?")),
    ("Sara has 14 pencils. She gives 5 to her brother and buys 9 more. How many pencils does Sara have?",
     ("How many pencils does Sara have after giving some away?", "How many pencils does Sara have?")),
]


@pytest.fixture(scope="module")
def engine(in_process_engine):
    return in_process_engine


async def _probe_cache_share(engine, probe_format: ProbeFormat) -> tuple[int, int]:
    pipeline = GuardPipeline(engine, GuardConfig(probe_format=probe_format))
    cached = prompt = 0
    for n, (question, sub_questions) in enumerate(PROBLEMS):
        result = await pipeline.run(GuardParams(
            question=question, sub_questions=sub_questions, num_paths=4, max_tokens=96, seed=n,
            scorer="trace", request_id=f"cache-{probe_format.value}-{n}",
        ))
        assert result.usage["probe"].prompt_tokens > 0, result.notes
        cached += result.usage["probe"].cached_prompt_tokens
        prompt += result.usage["probe"].prompt_tokens
        logger.info("%s probes of %r: %s", probe_format.value, question[:30], result.sub_questions)
    return cached, prompt


async def test_continue_probes_are_served_from_the_prefix_cache(engine):
    cached, prompt = await _probe_cache_share(engine, ProbeFormat.CONTINUE)
    legacy_cached, legacy_prompt = await _probe_cache_share(engine, ProbeFormat.LEGACY)
    share, legacy_share = cached / prompt, legacy_cached / legacy_prompt
    print(f"\nprobe prompt tokens from the prefix cache: continue {cached}/{prompt} = {share:.1%}, "
          f"legacy {legacy_cached}/{legacy_prompt} = {legacy_share:.1%}")
    assert share >= 0.90, (cached, prompt)


async def test_reset_prefix_cache_empties_the_cache(engine):
    from guard.engine import Prompt, SampleSpec

    prompt = Prompt("Question: " + " ".join(f"item {i} costs {i + 3} dollars." for i in range(20)) + "\nSolution:")
    spec = SampleSpec(n=1, temperature=0.0, max_tokens=1)
    await engine.generate(prompt, spec, "reset-fill")
    again = await engine.generate(prompt, spec, "reset-hit")
    assert again.cached_prompt_tokens >= 64, again
    assert await engine.reset_prefix_cache()
    after = await engine.generate(prompt, spec, "reset-miss")
    assert after.cached_prompt_tokens == 0, after
