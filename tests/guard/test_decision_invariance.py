"""Property: permuting the paths never changes the decision, answer, confidence, region or FFS multiset."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.answers import cluster_answers, normalize_answer, representative
from guard.consistency import analyze_ars
from guard.policy import Policy, decide
from guard.scorers import SCORERS, ScoringInput, select

# "5" fits both "5 km" and "5 m", which do not match each other: equivalence is not transitive.
FINALS = ["12", "11", "30", None, "5 km", "5 m", "5", "5 kilometers"]
STEPS = ["5", "7", "12", "30", ""]  # "" = the probe went unanswered; 12 and 30 can echo the finals


@st.composite
def path_sets(draw):
    n = draw(st.integers(min_value=1, max_value=9))
    k = draw(st.integers(min_value=0, max_value=3))
    finals = draw(st.lists(st.sampled_from(FINALS), min_size=n, max_size=n))
    steps = [draw(st.lists(st.sampled_from(STEPS), min_size=n, max_size=n)) for _ in range(k)]
    soft = None
    if k and draw(st.booleans()):
        soft = []
        for row in steps:
            cands = sorted({a for a in row if a})
            soft_row = []
            for _ in range(n):
                if not cands or draw(st.booleans()):
                    soft_row.append(None)
                    continue
                mass = draw(st.lists(st.integers(min_value=1, max_value=9), min_size=len(cands), max_size=len(cands)))
                soft_row.append({c: m / sum(mass) for c, m in zip(cands, mass)})
            soft.append(soft_row)
    tokens = [
        [[-draw(st.integers(min_value=0, max_value=5)) / 2, -6.0]] * draw(st.integers(min_value=0, max_value=3))
        for _ in range(n)
    ]
    perm = draw(st.permutations(range(n)))
    return finals, steps, soft, tokens, perm


def run_core(finals, steps, soft, tokens, scorer, policy):
    answers = [normalize_answer(f) if f else None for f in finals]
    ars = None
    if steps:
        ars = analyze_ars([f"s{k}" for k in range(len(steps))], steps, soft,
                          final_answers=[a.normalized if a else "" for a in answers], question="How many?",
                          ffs_threshold=policy.ffs_agreement)
    inp = ScoringInput(answers, cluster_answers(answers), tokens, ars)
    sel = select(SCORERS[scorer], inp)
    winner = list(inp.clusters[sel.winner]) if sel.winner is not None else []
    verdict = decide(sel, ars, winner, scorer, policy)
    ffs = sorted((f or 0) for f in ars.first_failure_step) if ars else []
    rep = answers[representative(answers, winner)] if winner else None
    answer = (rep.normalized, rep.unit) if rep else None
    return verdict.decision, verdict.abstain_reason, answer, round(sel.confidence, 9), verdict.region, ffs


@pytest.mark.parametrize("scorer", sorted(SCORERS))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=path_sets())
def test_permuting_paths_changes_nothing(scorer, case):
    finals, steps, soft, tokens, perm = case
    policy = Policy()
    base = run_core(finals, steps, soft, tokens, scorer, policy)
    permuted = run_core(
        [finals[i] for i in perm],
        [[row[i] for i in perm] for row in steps],
        [[row[i] for i in perm] for row in soft] if soft is not None else None,
        [tokens[i] for i in perm],
        scorer, policy,
    )
    assert permuted == base
