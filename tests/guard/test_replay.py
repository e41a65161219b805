"""Benchmark records: a cached record re-scores to the same verdicts as the live pipeline."""

from guard import replay as records
from guard.params import GuardParams
from guard.pipeline import GuardPipeline
from guard.policy import Policy
from tests.scripted_engine import ScriptedEngine


async def test_record_roundtrip_rescores_like_the_pipeline(tmp_path):
    paths = [" 3 + 4 = 7.\nAnswer: 7", " 3 + 4 = 7.\nAnswer: 7", " 3 + 5 = 8.\nAnswer: 8"]
    engine = ScriptedEngine(paths=paths, probe=lambda path, sub: path.split()[4].rstrip("."))
    result = await GuardPipeline(engine).run(
        GuardParams(question="q?", num_paths=3, sub_questions=("What is the sum?",))
    )
    rec = records.Record.from_result("p1", "7", ["7"], result)
    path = tmp_path / "r.jsonl"
    records.save([rec], path)
    loaded = records.load(path)["p1"]
    outcome = records.rescore(loaded, "trace", Policy())
    assert outcome.correct is True
    assert outcome.confidence == result.confidence
    assert outcome.accepted == (result.decision.value == "accept")
    assert records.rescore(loaded, "majority", Policy()).confidence == 2 / 3
    # The wrong path (answer 8) first departs at sub-question 1, whose gold value (7) it got wrong.
    assert records.ffs_matches(loaded, Policy()) == (1, 1)
