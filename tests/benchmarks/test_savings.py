"""The savings replay: the sampler's clock on recorded paths, against hand-worked cases and the real sampler."""

from __future__ import annotations

import pytest

from benchmarks.savings import Config, evaluate, simulate, subset
from guard.answers import extract_answer
from guard.confidence_abort import AbortRule, ConfidenceWatch
from guard.engine import Prompt, SampleSpec
from guard.policy import Policy
from guard.replay import Record, encode_answer
from guard.sampling import StopRule, sample_stream
from tests.scripted_engine import UNSURE_WORD, ScriptedEngine

SURE, UNSURE = [-0.1, -3.0], [-0.7, -0.7]


def record(paths: list[tuple[str, int, int | None]], gold: str = "7") -> Record:
    """paths: (answer, tokens, first unsure token or None)."""
    tops = [[UNSURE if unsure is not None and j >= unsure else SURE for j in range(tokens)]
            for _, tokens, unsure in paths]
    answers = [encode_answer(extract_answer(f"Answer: {a}")) for a, _, _ in paths]
    return Record("p", gold, answers, tops, [], "none", [], None, [], 0.0, sum(t for _, t, _ in paths))


def test_fixed_runs_every_path_to_its_end():
    rec = record([("7", 10, None)] * 4 + [("8", 30, None)] * 4)
    sim = simulate(rec, Config("fixed"))
    assert (sim.voting, sim.tokens, sim.started, sim.aborted) == (list(range(8)), 160, 8, 0)


def test_unanimous_start_stops_at_min_paths():
    rec = record([("7", 10, None)] * 8)
    sim = simulate(rec, Config("adaptive", (4, 0.95), 4))
    assert (sim.voting, sim.tokens, sim.started) == ([0, 1, 2, 3], 40, 4)


def test_collapse_is_cut_when_the_warmup_sets_the_threshold():
    # All 8 start at once; the first four (the warm-up) end at t=10. Path 4 has been unsure since its
    # second token: it is cut then, at 10 tokens, not at its 30.
    rec = record([("7", 10, None)] * 4 + [("9", 30, 1)] + [("7", 12, None)] * 3)
    sim = simulate(rec, Config("abort", abort=AbortRule(4, 0.9, window=2)))
    assert sim.voting == [0, 1, 2, 3, 5, 6, 7] and sim.aborted == 1
    assert sim.tokens == 4 * 10 + 10 + 3 * 12


def test_subset_rescores_only_the_voting_paths():
    rec = record([("7", 5, None), ("9", 5, None), ("9", 5, None)])
    assert [a[1] for a in subset(rec, [0, 2]).answers] == ["7", "9"]
    rows = evaluate([rec, record([("7", 5, None)] * 3)], "majority", Policy(),
                    configs=(Config("fixed"), Config("adaptive", (2, 0.7), 2)), resamples=20)
    assert rows[0]["token_ratio"][0] == 1.0 and rows[1]["token_ratio"][0] < 1.0


@pytest.mark.parametrize(
    ("answers", "cfg"),
    [
        (["7", "7", "9", "7", "7", "7", "8", "7"], Config("adaptive", (4, 0.95), 4)),
        (["7", "8", "9", "7", "8", "7", "8", "7"], Config("adaptive", (3, 0.9), 3)),
        (["7", "7", "7", "7", "9", "7", "7", "7"], Config("abort", (4, 0.95), 4, AbortRule(4, 0.9, window=2))),
    ],
)
async def test_replay_matches_the_real_sampler_on_the_scripted_engine(answers, cfg):
    # Distinct lengths, so no two paths end at once; path 4 is unsure from its second word.
    lengths = [12, 15, 18, 21, 40, 14, 17, 20]
    texts = [" ".join(["step" if (i != 4 or j == 0) else UNSURE_WORD for j in range(n - 2)]) + f" Answer: {a}"
             for i, (a, n) in enumerate(zip(answers, lengths))]
    rec = record([(a, n, 1 if i == 4 else None) for i, (a, n) in enumerate(zip(answers, lengths))])
    sim = simulate(rec, cfg)
    engine = ScriptedEngine(paths=tuple(texts), word_seconds=0.004)
    watch = ConfidenceWatch(cfg.abort) if cfg.abort else None
    out = await sample_stream(
        engine, Prompt("Question: q\nSolution:"), SampleSpec(n=8, temperature=0.7, seed=0, logprobs=2), "r",
        StopRule(cfg.rule_args[0], 8, cfg.rule_args[1]), cfg.parallel,
        lambda text, cut: extract_answer(text), watch=watch,
    )
    assert (out.report.started, out.report.finished, out.report.aborted_low_confidence) == (
        sim.started, len(sim.voting), sim.aborted)
    assert [c.text for c in out.result.completions] == [texts[i] for i in sim.voting]
