"""The pipeline on a scripted engine: guard and raw modes, ARS sources, batching, cancellation, bad input."""

import asyncio

import pytest

from guard.ars import ars_seed
from guard.errors import EngineError, InvalidArgumentError
from guard.params import GuardParams, ImageInput, Mode
from guard.pipeline import GuardConfig, GuardPipeline
from guard.result import AbstainReason, ArsSource, Decision, Region
from tests.scripted_engine import ScriptedEngine, ars_json

GOOD = " He has 7 + 5 = 12 apples.\nAnswer: 12"


def consistent_probe(path: str, sub: str) -> str:
    return {"How many at first?": "7", "How many bought?": "5"}.get(sub, "")


async def test_guard_accepts_consistent_paths_with_request_ars():
    engine = ScriptedEngine(paths=[GOOD], probe=consistent_probe)
    pipeline = GuardPipeline(engine)
    params = GuardParams(question="Tom has 7 apples and buys 5. How many?", num_paths=4,
                         sub_questions=("How many at first?", "How many bought?"), request_id="r1")
    result = await pipeline.run(params)
    assert result.decision is Decision.ACCEPT
    assert result.answer.normalized == "12"
    assert result.region is Region.RELIABLE
    assert result.ars_source is ArsSource.REQUEST
    assert [row.modal_answer for row in result.sub_questions] == ["7", "5"]
    assert all(p.support == 1.0 and p.first_failure_step is None for p in result.paths)
    assert len(result.paths) == 4
    # One sampling request with n=4, and the probes in one generate_many batch; no ARS generation. The 4
    # paths are equal, so their 8 probes are 2 distinct prompts, each sent once.
    kinds = [k for k, _ in engine.calls]
    assert kinds.count("sample") == 1 and ("sample", 4) in engine.calls
    assert kinds.count("probe") == 2 and "ars" not in kinds
    assert [row.path_answers for row in result.sub_questions] == [["7"] * 4, ["5"] * 4]
    assert {"sample", "probe", "score", "decide", "total"} <= set(result.timings_ms)
    assert result.usage["probe"].generated_tokens > 0
    assert result.features["vote_share"] == 1.0 and result.features["ars_agreement"] == 1.0
    assert result.features["support"] == 1.0 and result.features["margin"] == 1.0
    assert result.features["token_confidence"] > 0


async def test_silent_failure_is_detected_end_to_end():
    paths = [f" Step {i}.\nAnswer: 12" for i in range(4)]
    # Every path reaches 12, but each gives a different intermediate value.
    engine = ScriptedEngine(paths=paths, probe=lambda path, sub: path.split()[1].rstrip("."))
    result = await GuardPipeline(engine).run(
        GuardParams(question="q?", num_paths=4, sub_questions=("What is the first value?",))
    )
    assert result.vote_share == 1.0
    assert result.region is Region.SILENT_RISK
    assert result.decision is Decision.ABSTAIN
    assert result.abstain_reason is AbstainReason.SILENT_FAILURE
    assert [p.first_failure_step for p in result.paths] == [None, None, None, None]  # no mode is well supported


@pytest.mark.parametrize("score_mode, scored", [("full", [9]), ("contested", [6]), ("hard", [])])
async def test_score_mode_sets_what_is_scored_and_the_silent_failure_stays_detected(score_mode, scored):
    paths = [f" Step {v}.\nAnswer: 12" for v in (1, 1, 2, 3)]
    engine = ScriptedEngine(paths=paths, probe=lambda path, sub: path.split()[1].rstrip("."))
    result = await GuardPipeline(engine).run(
        GuardParams(question="q?", num_paths=4, sub_questions=("What is the first value?",), score_mode=score_mode)
    )
    # Three different sub-answers, mode "1" on 2 of 4 paths: full scores all 3 under each path's probe,
    # contested 2 (the mode against the path's own answer or the runner-up), hard none. Paths 0 and 1 are
    # equal, so their probe and their scorings are sent once: 3 distinct probe prompts, not 4.
    assert [n for kind, n in engine.calls if kind == "score"] == scored
    # Every path answers 12 but only half agree on the step: TRACE's silent failure.
    assert result.region is Region.SILENT_RISK
    assert result.decision is Decision.ABSTAIN and result.abstain_reason is AbstainReason.SILENT_FAILURE
    # The paths that gave the modal sub-answer put (nearly) all their mass on it, the others little.
    assert all(p.support > 0.9 for p in result.paths[:2]) and all(p.support < 0.1 for p in result.paths[2:])


async def test_no_step_agreement_at_all_is_a_silent_failure():
    # Four different intermediate values: no step has a mode, so nothing is scored and TRACE is the
    # plain vote (it says so), but the unanimous answer still abstains as a silent failure.
    paths = [f" Step {i}.\nAnswer: 12" for i in range(4)]
    engine = ScriptedEngine(paths=paths, probe=lambda path, sub: path.split()[1].rstrip("."))
    result = await GuardPipeline(engine).run(
        GuardParams(question="q?", num_paths=4, sub_questions=("What is the first value?",), score_mode="full")
    )
    assert [kind for kind, _ in engine.calls].count("score") == 0
    assert result.confidence == 1.0 and any("answer-only consistency" in n for n in result.notes)
    assert result.decision is Decision.ABSTAIN and result.abstain_reason is AbstainReason.SILENT_FAILURE


async def test_model_generated_ars_then_cache_hit():
    engine = ScriptedEngine(paths=[GOOD], probe=consistent_probe, ars=ars_json("How many at first?"))
    pipeline = GuardPipeline(engine)
    params = GuardParams(question="Tom has 7 apples and buys 5. How many?", num_paths=2)
    first = await pipeline.run(params)
    assert first.ars_source is ArsSource.MODEL
    assert [row.sub_question for row in first.sub_questions] == ["How many at first?"]
    second = await pipeline.run(params)
    assert second.ars_source is ArsSource.CACHE
    assert [k for k, _ in engine.calls].count("ars") == 1


async def test_unusable_greedy_ars_is_retried_with_seeded_samples():
    question = "Tom has 7 apples and buys 5 more. How many apples does he have?"
    engine = ScriptedEngine(paths=[GOOD], probe=consistent_probe, ars=[
        ars_json("How many apples does he have?"),  # greedy: only the final sentence again
        "not json", ars_json("How many apples does Tom buy?"), ars_json("How many apples does Tom buy?"),
        ars_json("How many apples at first?"),
    ])
    result = await GuardPipeline(engine).run(GuardParams(question=question, num_paths=2))
    assert result.ars_source is ArsSource.MODEL and result.ars_error == ""
    assert [row.sub_question for row in result.sub_questions] == [
        "How many apples does Tom buy?", "How many apples at first?"]
    ars_calls = [(spec.n, spec.temperature, spec.seed) for kind, spec in engine.specs if kind == "ars"]
    assert ars_calls == [(1, 0.0, None), (4, 0.8, ars_seed(question, ()))]
    # The retry's usage counts with the ARS phase.
    assert result.usage["ars"].generated_tokens > 0


@pytest.mark.parametrize("retry_samples, calls", [(0, 1), (3, 2)])
async def test_unusable_ars_after_the_retry_says_both_reasons(retry_samples, calls):
    engine = ScriptedEngine(paths=[GOOD], ars=["not json", '{"sub_questions": []}'])
    pipeline = GuardPipeline(engine, GuardConfig(ars_retry_samples=retry_samples))
    result = await pipeline.run(GuardParams(question="q?", num_paths=3))
    assert result.ars_source is ArsSource.NONE and "invalid JSON" in result.ars_error
    assert [k for k, _ in engine.calls].count("ars") == calls
    assert ("sampled retries: model generated no usable" in result.ars_error) == (retry_samples > 0)
    assert result.decision is Decision.ACCEPT


@pytest.mark.parametrize("ars_text, error", [("not json", "invalid JSON"), ('{"sub_questions": []}', "no usable")])
async def test_bad_generated_ars_falls_back_to_answer_only(ars_text, error):
    engine = ScriptedEngine(paths=[GOOD], ars=ars_text)
    result = await GuardPipeline(engine).run(GuardParams(question="q?", num_paths=3))
    assert result.ars_source is ArsSource.NONE
    assert error in result.ars_error
    assert result.sub_questions == []
    assert result.decision is Decision.ACCEPT  # unanimous answer, majority fallback


async def test_majority_scorer_skips_ars_and_probes():
    engine = ScriptedEngine(paths=[GOOD, " Answer: 11", GOOD])
    result = await GuardPipeline(engine).run(GuardParams(question="q?", num_paths=3, scorer="majority"))
    assert [k for k, _ in engine.calls] == ["sample"]
    assert result.answer.normalized == "12"
    assert result.vote_share == pytest.approx(2 / 3)
    assert result.confidence == pytest.approx(2 / 3)


async def test_no_extractable_answer_abstains():
    engine = ScriptedEngine(paths=[" I do not know."])
    result = await GuardPipeline(engine).run(GuardParams(question="q?", num_paths=3, scorer="majority"))
    assert result.decision is Decision.ABSTAIN
    assert result.abstain_reason is AbstainReason.NO_ANSWER
    assert result.answer is None


async def test_raw_mode_is_one_sample_in_the_same_envelope():
    engine = ScriptedEngine(paths=[GOOD])
    result = await GuardPipeline(engine).run(GuardParams(question="q?", mode=Mode.RAW, num_paths=8))
    assert engine.calls == [("sample", 1)]
    assert result.decision is Decision.RAW
    assert result.answer.normalized == "12"
    assert len(result.paths) == 1


async def test_image_to_text_only_model_is_rejected():
    engine = ScriptedEngine(accepts_images=False)
    params = GuardParams(question="q?", images=(ImageInput(b"\x89PNG...", "image/png"),))
    with pytest.raises(InvalidArgumentError) as err:
        await GuardPipeline(engine).run(params)
    assert err.value.field == "images"
    assert engine.calls == []


async def test_engine_failure_propagates_as_engine_error():
    engine = ScriptedEngine(fail=EngineError("boom"))
    with pytest.raises(EngineError, match="boom"):
        await GuardPipeline(engine).run(GuardParams(question="q?"))


async def test_cancellation_aborts_engine_requests():
    engine = ScriptedEngine(paths=[GOOD], delay_seconds=10)
    task = asyncio.ensure_future(GuardPipeline(engine).run(GuardParams(question="q?", request_id="cancel-me")))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.aborted == ["cancel-me"]
    await asyncio.sleep(0)
    assert engine.in_flight == 0


async def test_request_id_is_assigned_when_missing():
    result = await GuardPipeline(ScriptedEngine(paths=[GOOD])).run(GuardParams(question="q?", scorer="majority"))
    assert len(result.request_id) == 32


async def test_overhead_is_total_minus_engine_wait():
    engine = ScriptedEngine(paths=[GOOD], delay_seconds=0.05)
    result = await GuardPipeline(engine, GuardConfig()).run(GuardParams(question="q?", scorer="majority"))
    assert result.engine_wait_ms >= 50
    assert result.timings_ms["total"] >= result.engine_wait_ms


async def test_truncated_paths_have_no_answer():
    class Truncating(ScriptedEngine):
        async def generate(self, prompt, spec, request_id):
            result = await super().generate(prompt, spec, request_id)
            result.completions[0].finish_reason = "length"
            return result

    engine = Truncating(paths=[" 3 + 4 = 7, then 7 + 1 = 8 and"])
    result = await GuardPipeline(engine).run(GuardParams(question="q?", num_paths=2, scorer="majority"))
    assert result.paths[0].answer is None
    assert result.paths[1].answer is not None and result.paths[1].answer.normalized == "8"


async def test_completions_cut_at_their_token_limit_are_counted_and_never_read():
    # Probes that write out the calculation run past a 6-token probe limit: the cut "The total is 287 + 76"
    # would be read as 363, so it must count as unanswered. One of the paths is cut too.
    paths = [" 287 + 76 = 443.\nAnswer: 443"] * 3 + [" " + "step " * 40 + "Answer: 443"]
    engine = ScriptedEngine(paths=paths, probe=lambda path, sub: "The total is 287 + 76 = 443 apples",
                            honor_max_tokens=True)
    pipeline = GuardPipeline(engine, GuardConfig(probe_max_tokens=6))
    result = await pipeline.run(GuardParams(question="q?", num_paths=4, max_tokens=20,
                                            sub_questions=("What is the total?",)))
    assert result.usage["sample"].truncated == 1
    assert [p.answer is None for p in result.paths] == [False, False, False, True]
    # Engine completions cut: the three equal paths share one probe, the fourth has its own.
    assert result.usage["probe"].truncated == 2
    assert result.sub_questions[0].path_answers == ["", "", "", ""]
    assert result.sub_questions[0].modal_answer == ""

    # With room for the whole line the same probes are read.
    pipeline = GuardPipeline(engine, GuardConfig(probe_max_tokens=12))
    result = await pipeline.run(GuardParams(question="q?", num_paths=4, max_tokens=20,
                                            sub_questions=("What is the total?",)))
    assert result.usage["probe"].truncated == 0
    assert result.sub_questions[0].modal_answer == "443"


@pytest.mark.parametrize(("scorer", "mode", "continue_header"),
                         [("trace", Mode.GUARD, True), ("majority", Mode.GUARD, False),
                          ("deepconf", Mode.GUARD, False), ("trace", Mode.RAW, False)])
async def test_only_probing_requests_sample_with_the_continue_header(scorer, mode, continue_header):
    """The continue format's sampling prompt (sub-question lines in its examples) is for requests whose
    probes extend it; the others sample with the plain few-shot prompt, which gave better paths."""
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"], probe=lambda path, sub: "7")
    await GuardPipeline(engine).run(GuardParams(question="q?", num_paths=2, scorer=scorer, mode=mode,
                                                sub_questions=("How many at first?",)))
    [(_, prompt)] = [(k, p) for k, p in engine.prompts if k == "sample"][:1]
    [(_, spec)] = [(k, s) for k, s in engine.specs if k == "sample"][:1]
    assert ("Sub-question:" in prompt.text) is continue_header
    assert ("\nSub-question:" in spec.stop) is continue_header


async def test_a_sub_question_that_restates_the_question_is_not_probed_and_changes_nothing():
    question = "Tom has 7 apples and buys 5. How many apples does Tom have?"
    paths = [" 7 + 5 = 12.\nAnswer: 12", " 6 + 5 = 11.\nAnswer: 11", " 7 + 5 = 12.\nAnswer: 12", " 7 + 6 = 13.\nAnswer: 13"]

    async def run(sub_questions):
        engine = ScriptedEngine(paths=paths, probe=lambda path, sub: path.split()[0])
        result = await GuardPipeline(engine).run(
            GuardParams(question=question, num_paths=4, scorer="trace", sub_questions=sub_questions))
        return engine, result

    engine, with_restated = await run(("How many at first?", "How many apples does Tom have?"))
    _, without = await run(("How many at first?",))
    restated = with_restated.sub_questions[1]
    assert not restated.probed and restated.echo and restated.path_answers == [""] * 4
    assert with_restated.sub_questions[0].probed
    # One probe per distinct path for the first sub-question only.
    assert [kind for kind, _ in engine.calls].count("probe") == 3
    assert (with_restated.decision, with_restated.answer, with_restated.confidence) == (
        without.decision, without.answer, without.confidence)
    assert [(p.support, p.first_failure_step) for p in with_restated.paths] == [
        (p.support, p.first_failure_step) for p in without.paths]
