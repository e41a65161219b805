"""Benchmark records: a cached record re-scores to the same verdicts as the live pipeline."""

from guard import replay as records
from guard.params import GuardParams
from guard.pipeline import GuardPipeline
from guard.policy import Policy
from tests.scripted_engine import ScriptedEngine


async def test_record_roundtrip_rescores_like_the_pipeline(tmp_path):
    paths = [" 3 + 4 = 7, 7 + 2 = 9.\nAnswer: 9"] * 2 + [" 3 + 5 = 8, 8 + 2 = 10.\nAnswer: 10"]
    # The probe reads the intermediate value (after the first "="), not the final answer.
    engine = ScriptedEngine(paths=paths, probe=lambda path, sub: path.split("= ")[1].split(",")[0])
    question = "Ann has 3 pens and gets 4, then 2 more. How many pens does she have?"
    result = await GuardPipeline(engine).run(
        GuardParams(question=question, num_paths=3, sub_questions=("How many after the first gift?",))
    )
    assert result.sub_questions[0].modal_answer == "7" and not result.sub_questions[0].echo
    rec = records.Record.from_result("p1", "9", ["7"], result, question=question)
    path = tmp_path / "r.jsonl"
    records.save([rec], path)
    loaded = records.load(path)["p1"]
    outcome = records.rescore(loaded, "trace", Policy())
    assert outcome.correct is True
    assert outcome.confidence == result.confidence
    assert outcome.accepted == (result.decision.value == "accept")
    assert records.rescore(loaded, "majority", Policy()).confidence == 2 / 3
    # The wrong path (answer 10) first departs at sub-question 1, whose gold value (7) it got wrong (8).
    assert records.ffs_matches(loaded, Policy()) == (1, 1)
