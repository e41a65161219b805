"""max_total_tokens: the plan (paths, ARS, probes) and that a request never generates more."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.errors import InvalidArgumentError
from guard.params import GuardParams
from guard.pipeline import GuardConfig, GuardPipeline
from guard.stages import Stage
from guard.token_budget import plan_sampling, probes_fit
from tests.scripted_engine import ScriptedEngine, ars_json

PATH = " 4 + 3 = 7, then 7 + 5 = 12.\nAnswer: 12"  # 13 words: 13 tokens on the scripted engine


@pytest.mark.parametrize(
    ("limit", "num_paths", "max_tokens", "reserve", "paths", "ars"),
    [
        (None, 8, 64, 1000, 8, True),      # no budget: nothing changes
        (8 * 64, 8, 64, 0, 8, True),       # exactly enough for every path
        (3 * 64 + 10, 8, 64, 0, 3, True),  # three paths' worth
        (1000 + 64, 8, 64, 1000, 1, True), # the ARS reserve first, then one path
        (900, 8, 64, 1000, 8, False),      # no room for the ARS: dropped before any path
        (64, 8, 64, 0, 1, True),           # one path is always possible (params refuse less)
    ],
)
def test_plan_sampling_table(limit, num_paths, max_tokens, reserve, paths, ars):
    plan = plan_sampling(limit, num_paths, max_tokens, reserve)
    assert (plan.num_paths, plan.ars_allowed) == (paths, ars)
    assert bool(plan.notes) == (paths < num_paths or not ars)


def test_probes_fit_counts_the_worst_case():
    assert probes_fit(None, 10**9, 64, 12) == (True, "")
    assert probes_fit(100, 4, 8, 12)[0] is True        # 4 + 96 = 100
    fits, why = probes_fit(100, 5, 8, 12)
    assert not fits and "95 of 100 tokens left" in why


async def test_budget_samples_fewer_paths_and_says_so():
    engine = ScriptedEngine(paths=(PATH,), honor_max_tokens=True)
    result = await GuardPipeline(engine).run(
        GuardParams(question="q?", num_paths=8, max_tokens=20, max_total_tokens=70, scorer="majority"))
    assert len(result.paths) == 3 and engine.calls == [("sample", 3)]
    assert Stage.SAMPLE in result.degraded_stages and any("3 of 8 paths" in n for n in result.notes)
    assert result.answer.normalized == "12"


async def test_budget_skips_probing_it_cannot_pay_for():
    # Four paths of at most 20 tokens fit (80 <= 99); they write 13 each, and 4 probes could write 48.
    engine = ScriptedEngine(paths=(PATH,), probe=lambda p, s: "7", honor_max_tokens=True)
    params = GuardParams(question="q?", num_paths=4, max_tokens=20, sub_questions=("How many at first?",),
                         max_total_tokens=52 + 4 * 12 - 1, scorer="trace")
    result = await GuardPipeline(engine, GuardConfig(probe_max_tokens=12)).run(params)
    assert len(result.paths) == 4
    assert set(result.degraded_stages) >= {Stage.PROBE, Stage.SCORE}
    assert not any(kind == "probe" for kind, _ in engine.calls)
    assert any("token budget: skipped probing" in n for n in result.notes)
    # With one token more the probes fit.
    engine = ScriptedEngine(paths=(PATH,), probe=lambda p, s: "7", honor_max_tokens=True)
    result = await GuardPipeline(engine, GuardConfig(probe_max_tokens=12)).run(
        GuardParams(question="q?", num_paths=4, max_tokens=20, sub_questions=("How many at first?",),
                    max_total_tokens=52 + 4 * 12, scorer="trace"))
    assert Stage.PROBE not in result.degraded_stages


async def test_budget_drops_model_ars_generation_before_paths():
    engine = ScriptedEngine(paths=(PATH,), ars=ars_json("How many at first?"), honor_max_tokens=True)
    config = GuardConfig(ars_max_tokens=200, ars_retry_samples=4)  # it could write 1000 tokens
    result = await GuardPipeline(engine, config).run(
        GuardParams(question="q?", num_paths=4, max_tokens=20, max_total_tokens=500, scorer="trace"))
    assert not any(kind == "ars" for kind, _ in engine.calls)
    assert Stage.ARS in result.degraded_stages and len(result.paths) == 4


def test_max_total_tokens_is_validated():
    with pytest.raises(InvalidArgumentError) as err:
        GuardParams(question="q?", max_tokens=64, max_total_tokens=63)
    assert err.value.field == "max_total_tokens" and "at least max_tokens (64)" in err.value.message
    with pytest.raises(InvalidArgumentError):
        GuardParams(question="q?", max_total_tokens=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(20, 400), num_paths=st.integers(1, 8), words=st.integers(1, 30),
    scorer=st.sampled_from(["majority", "trace"]), model_ars=st.booleans(), adaptive=st.booleans(),
)
async def test_a_request_never_generates_more_than_its_budget(limit, num_paths, words, scorer, model_ars, adaptive):
    path = " " + " ".join(["step"] * (words - 1)) + "\nAnswer: 5"
    engine = ScriptedEngine(paths=(path,), probe=lambda p, s: "3 apples in the basket", honor_max_tokens=True,
                            ars=ars_json("How many at first?", "How many after?"))
    config = GuardConfig(ars_max_tokens=30, ars_retry_samples=1, probe_max_tokens=4)
    params = GuardParams(question="q?", num_paths=num_paths, max_tokens=20, max_total_tokens=max(limit, 20),
                         scorer=scorer, adaptive=adaptive,
                         sub_questions=() if model_ars else ("How many at first?",))
    result = await GuardPipeline(engine, config).run(params)
    assert sum(u.generated_tokens for u in result.usage.values()) <= params.max_total_tokens
