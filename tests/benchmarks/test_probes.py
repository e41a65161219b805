"""The probe-variant benchmark's parsing and gold-step tally."""

from types import SimpleNamespace

import pytest

from benchmarks.probes import Tally, Variant, tally_gold
from guard.answers import normalize_answer
from guard.probe import ProbeRead
from guard.prompts import ProbeFormat


def test_variant_spec():
    v = Variant.parse("continue:values:16")
    assert (v.probe_format, v.probe_read, v.max_tokens) == (ProbeFormat.CONTINUE, ProbeRead.VALUES, 16)
    assert v.name == "continue:values:16"


def test_gold_tally_counts_right_path_reads_echoes_and_ffs():
    problem = SimpleNamespace(answer="21")
    paths = [SimpleNamespace(answer=normalize_answer(a)) for a in ("21", "21", "20")]
    # Sub-question 1 (gold 15) is intermediate; sub-question 2 (gold 21) is the final answer.
    analysis = SimpleNamespace(path_answers=[["15", "21", "14"], ["21", "21", "20"]],
                               first_failure_step=[None, None, 1])
    tally = Tally()
    tally_gold(tally, problem, ("15", "21"), paths, analysis)
    summary = tally.summary()
    assert (tally.asked, tally.hits, tally.echoes) == (2, 1, 1)
    assert summary["probe_accuracy"] == 0.5 and summary["probe_echo_rate"] == 0.5
    assert (tally.ffs_total, tally.ffs_match) == (1, 1)
    assert (tally.paths, tally.right_paths) == (3, 2) and summary["paths_right_share"] == 2 / 3


def test_variant_spec_all_sends_every_probe():
    v = Variant.parse("continue:greedy:24:all")
    assert not v.share and v.name == "continue:greedy:24:all"
    assert Variant.parse("continue:greedy:24").share
    with pytest.raises(ValueError):
        Variant.parse("continue:greedy:24:some")


def test_gold_tally_reads_a_sub_question_not_asked_as_the_paths_final_answer():
    problem = SimpleNamespace(answer="21")
    paths = [SimpleNamespace(answer=normalize_answer(a)) for a in ("21", "20")]
    # Sub-question 2 restates the question: not asked, so it reads as each path's own final answer.
    analysis = SimpleNamespace(path_answers=[["15", "15"], ["", ""]], first_failure_step=[None, 2],
                               asked=[True, False])
    tally = Tally()
    tally_gold(tally, problem, ("15", "21"), paths, analysis)
    # The wrong path read 15 right and its final answer 20 wrong at step 2: FFS 2 matches.
    assert (tally.ffs_total, tally.ffs_match) == (1, 1)
    tally.sent, tally.probes = 2, 4
    assert tally.summary()["probes_sent_share"] == 0.5


async def test_warm_as_served_leaves_only_the_sampled_paths_cached():
    from benchmarks.probes import warm_as_served
    from guard.engine import Prompt, SampleSpec
    from tests.scripted_engine import ScriptedEngine

    engine = ScriptedEngine(prefix_cache=True)
    probe = Prompt("Question: q Solution: two steps here Sub-question: how many? Short answer:")
    spec = SampleSpec(n=1, temperature=0.0, max_tokens=4)
    # A variant's probe leaves its whole prompt cached: a second variant would find it all.
    await engine.generate_many([probe], spec, "variant-a")
    assert (await engine.generate_many([probe], spec, "variant-b"))[0].cached_prompt_tokens == 10
    await warm_as_served(engine, [Prompt("Question: q Solution: two steps here")], "warm")
    # After warming, only the path is cached: the probe's own line is computed again.
    assert (await engine.generate_many([probe], spec, "variant-b"))[0].cached_prompt_tokens == 5


def test_summary_reports_probe_and_score_stage_ratios_as_medians():
    tally = Tally(ratios=[0.4, 0.5, 0.9], probe_ms=[400.0, 500.0, 900.0], score_ratios=[0.0, 0.2, 0.3])
    summary = tally.summary()
    assert summary["probe_over_sample_p50"] == 0.5 and summary["score_over_sample_p50"] == 0.2
    assert summary["problems"] == 3
