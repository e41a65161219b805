"""From sampled paths and their consistency analysis to the decision and the per-path / per-step report."""

from __future__ import annotations

from dataclasses import dataclass, replace

from guard.answers import Answer, cluster_answers, representative
from guard.consistency import ArsAnalysis
from guard.policy import Policy, Verdict, decide
from guard.result import PathResult, ProbeAnswerSource, SubQuestionResult
from guard.scorers import SCORERS, ScoringInput, Selection, select
from guard.scorers.deepconf import path_confidence


@dataclass(frozen=True)
class Decided:
    """The scorer's selection, the policy's verdict, and what the response reports about them."""

    selection: Selection
    verdict: Verdict
    answer: Answer | None
    # The paths with their weights, support, FFS and winning-cluster flag filled in.
    paths: list[PathResult]
    sub_questions: list[SubQuestionResult]
    features: dict[str, float]
    scoring: ScoringInput


def decide_paths(
    scorer_name: str, paths: list[PathResult], top_logprobs: list[list[list[float]]],
    analysis: ArsAnalysis | None, policy: Policy,
) -> Decided:
    answers = [p.answer for p in paths]
    clusters = cluster_answers(answers)
    inp = ScoringInput(answers=answers, clusters=clusters, top_logprobs=top_logprobs, ars=analysis)
    selection = select(SCORERS[scorer_name], inp)
    winners = list(clusters[selection.winner]) if selection.winner is not None else []
    verdict = decide(selection, analysis, winners, scorer_name, policy)
    scored = _scored_paths(paths, selection.path_weights, winners, analysis)
    return Decided(
        selection=selection,
        verdict=verdict,
        answer=paths[representative(answers, winners)].answer if winners else None,
        paths=scored,
        sub_questions=sub_question_table(analysis, scored) if analysis is not None else [],
        features=_features(selection, analysis, winners, top_logprobs),
        scoring=inp,
    )


def _scored_paths(paths: list[PathResult], weights: list[float], winners: list[int],
                  analysis: ArsAnalysis | None) -> list[PathResult]:
    support = analysis.filled_support() if analysis is not None else None
    out = []
    for p in paths:
        p = replace(p, score=weights[p.index], in_winning_cluster=p.index in winners)
        if analysis is not None:
            p = replace(p, support=support[p.index], first_failure_step=analysis.first_failure_step[p.index])
        out.append(p)
    return out


def sub_question_table(analysis: ArsAnalysis, paths: list[PathResult]) -> list[SubQuestionResult]:
    table = []
    for k, sub_question in enumerate(analysis.sub_questions):
        sources = [answer_source(a, paths[i]) for i, a in enumerate(analysis.path_answers[k])]
        table.append(SubQuestionResult(
            sub_question=sub_question,
            modal_answer=analysis.modal[k],
            agreement=analysis.agreement[k],
            soft_agreement=analysis.soft_agreement[k],
            path_answers=analysis.path_answers[k],
            answered=analysis.answered[k],
            echo=analysis.echo[k],
            echo_paths=sources.count(ProbeAnswerSource.FINAL_ANSWER),
            from_path_values=sources.count(ProbeAnswerSource.PATH_VALUE),
            path_answer_sources=sources,
            probed=analysis.asked[k],
        ))
    return table


def _features(selection: Selection, analysis: ArsAnalysis | None, winners: list[int],
              top_logprobs: list[list[list[float]]]) -> dict[str, float]:
    """Features of the winning cluster, as the policy and calibration see them."""
    features = {"vote_share": selection.vote_share, "weighted_share": selection.weighted_share,
                "margin": selection.margin}
    if not winners:
        return features
    if analysis is not None:
        step_agreement = analysis.agreement_among(winners)
        if step_agreement is not None:
            features["ars_agreement"] = step_agreement
        known = [analysis.support[i] for i in winners if analysis.support[i] is not None]
        if known:
            features["support"] = sum(known) / len(known)
    if top_logprobs and any(top_logprobs):
        features["token_confidence"] = sum(path_confidence(top_logprobs[i]) for i in winners) / len(winners)
    return features


def answer_source(answer: str, path: PathResult) -> ProbeAnswerSource | None:
    """Where a path's normalised probe answer comes from: a restatement of its own final answer is
    kept as the answer (the probe may be right that the step's value is the final one) but told apart."""
    if not answer:
        return None
    if path.answer is not None and answer == path.answer.normalized:
        return ProbeAnswerSource.FINAL_ANSWER
    if answer in path.path_values:
        return ProbeAnswerSource.PATH_VALUE
    return ProbeAnswerSource.OTHER
