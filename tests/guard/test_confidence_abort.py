"""Online DeepConf: the threshold from the warm-up, the sliding window, and paths aborted mid-stream."""

from __future__ import annotations

import numpy as np
import pytest

from guard.answers import extract_answer
from guard.confidence_abort import AbortRule, ConfidenceWatch, WindowConfidence, quantile
from guard.engine import Prompt, SampleSpec
from guard.events import PathEvent
from guard.params import GuardParams
from guard.pipeline import GuardPipeline
from guard.sampling import StopReason, StopRule, sample_stream
from guard.scorers.deepconf import path_confidence
from tests.scripted_engine import UNSURE_WORD, ScriptedEngine

SURE = [-0.1, -3.0]     # token confidence 1.55
UNSURE = [-0.7, -0.7]   # token confidence 0.7


def path(answer: str, words: int = 6, unsure_at: int | None = None) -> str:
    """A path of `words` working words then its answer line; `unsure_at`: from that word on, the model is
    unsure of every working word."""
    working = ["step" if unsure_at is None or i < unsure_at else UNSURE_WORD for i in range(words)]
    return " ".join(working) + f" Answer: {answer}"


@pytest.mark.parametrize(("values", "q"), [([3.0, 1.0, 2.0, 5.0], 0.1), ([1.0], 0.5), ([2.0, 2.0], 0.9),
                                           ([0.5, 4.0, 1.5, 9.0, 2.0], 0.35)])
def test_quantile_interpolates_like_numpy(values, q):
    assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_threshold_waits_for_the_warmup_then_keeps_the_top_share():
    rule = AbortRule(warmup=4, keep=0.9)
    assert rule.threshold([1.0, 2.0, 3.0]) is None
    assert rule.threshold([4.0, 1.0, 3.0, 2.0]) == pytest.approx(1.3)   # 10% quantile
    assert AbortRule(warmup=4, keep=0.1).threshold([4.0, 1.0, 3.0, 2.0]) == pytest.approx(3.7)


def test_window_confidence_is_the_lowest_full_window():
    window = WindowConfidence(2)
    window.add([SURE])
    assert window.lowest == float("inf")          # no full window yet: never aborts
    window.add([SURE, UNSURE, UNSURE, SURE])
    assert window.lowest == pytest.approx(0.7)    # the two unsure tokens
    window.add([SURE, SURE])
    assert window.lowest == pytest.approx(0.7)    # the lowest so far stays


def test_window_agrees_with_the_offline_deepconf_confidence():
    tops = [SURE, SURE, UNSURE, SURE, UNSURE, UNSURE, SURE, SURE]
    window = WindowConfidence(3)
    window.add(tops)
    assert window.lowest == pytest.approx(path_confidence(tops, window=3))


def read(text: str, truncated: bool):
    return None if truncated else extract_answer(text)


async def stream(engine, *, max_paths=6, min_paths=4, level=0.95, parallel=4, warmup=4):
    spec = SampleSpec(n=max_paths, temperature=0.7, max_tokens=64, seed=10, logprobs=2)
    aborts = []
    out = await sample_stream(
        engine, Prompt("Question: q\nSolution:"), spec, "req", StopRule(min_paths, max_paths, level), parallel, read,
        watch=ConfidenceWatch(AbortRule(warmup, keep=0.9, window=2)), on_abort=lambda i, n: aborts.append((i, n)),
    )
    return out, aborts


@pytest.mark.parametrize(
    ("case", "paths", "expected"),
    [
        # (stop reason, started, voting paths, aborted for low confidence, tokens of the aborted paths)
        ("unanimous start stops at min_paths", [path("7")] * 4, (StopReason.SETTLED, 4, 4, 0, 0)),
        ("split vote runs to max_paths", [path("7"), path("8")] * 4, (StopReason.MAX_PATHS, 8, 8, 0, 0)),
        ("confidence collapse aborts one path",
         [path("7"), path("7"), path("7"), path("9"), path("8", unsure_at=1), path("7"), path("7")],
         (StopReason.SETTLED, 8, 7, 1, 2)),
    ],
)
async def test_stop_and_abort_table(case, paths, expected):
    engine = ScriptedEngine(paths=tuple(paths))
    out, aborts = await stream(engine, max_paths=8)
    report = out.report
    got = (report.stop_reason, report.started, report.finished, report.aborted_low_confidence,
           out.result.aborted_tokens)
    assert got == expected, case
    assert len(aborts) == report.aborted_low_confidence
    # Aborted paths never vote: none of their text is among the voting completions.
    assert all(UNSURE_WORD not in c.text for c in out.result.completions)
    if report.aborted_low_confidence:
        # After 3-1 the fifth path (index 4) was closed mid-stream at its first window with an unsure
        # token, and a sixth agreeing path replaced it (6-1 settles).
        assert aborts == [(4, 2)] and engine.stream_aborts == [(paths[4], 2)]
        assert report.confidence_threshold == pytest.approx(1.55)


async def test_paths_running_when_the_threshold_is_set_are_checked_against_their_past():
    # All six start at once; the unsure path is long, so it is still running when the four short sure
    # paths have set the threshold, and its past windows already fall under it.
    engine = ScriptedEngine(paths=(path("7", 2), path("7", 2), path("7", 2), path("7", 2),
                                   path("8", 30, unsure_at=0), path("7", 2)), word_seconds=0.01)
    out, aborts = await stream(engine, max_paths=6, min_paths=6, level=1.0, parallel=6)
    assert [i for i, _ in aborts] == [4]
    tokens = aborts[0][1]
    assert 2 <= tokens < 30            # aborted mid-path, not after its end
    assert out.report.finished == 5 and out.result.aborted_tokens == tokens


async def test_no_abort_before_the_warmup_is_done():
    # Warm-up of 8 with 6 paths: the threshold is never set and every path votes, however unsure.
    engine = ScriptedEngine(paths=(path("7"), path("8", unsure_at=0)))
    out, aborts = await stream(engine, max_paths=6, min_paths=6, level=1.0, warmup=8)
    assert aborts == [] and out.report.finished == 6 and out.report.confidence_threshold is None


async def test_aborted_path_frees_its_slot_but_counts_against_max_paths():
    # Parallel 1: after the warm-up, paths run one at a time; the aborted ones are replaced while the
    # cap allows, and the cap counts them.
    engine = ScriptedEngine(paths=(path("7"), path("8"), path("7"), path("8")) + (path("9", unsure_at=0),) * 4)
    out, aborts = await stream(engine, max_paths=8, min_paths=8, level=1.0, parallel=1)
    assert len(aborts) == 4 and out.report.started == 8 and out.report.finished == 4


async def test_pipeline_reports_the_abort_and_the_paths_left_vote():
    # All eight run at once; the sure paths are shorter, so they end first and set the threshold.
    engine = ScriptedEngine(paths=(path("7", 20),) * 4 + (path("9", 40, unsure_at=2),) * 4, word_seconds=0.002)
    pipeline = GuardPipeline(engine)
    params = GuardParams("What is 3 + 4?", num_paths=8, scorer="majority", seed=1, confidence_abort=True,
                         confidence_warmup=4, parallel_paths=4)
    events = []
    result = await pipeline.run(params, events.append)
    sampling = result.sampling
    assert not sampling.adaptive and sampling.stop_reason is StopReason.FIXED
    assert sampling.aborted_low_confidence == 4 and sampling.finished == 4
    assert [p.answer.normalized for p in result.paths] == ["7"] * 4
    assert result.answer.normalized == "7"
    # Their tokens are spent all the same: the usage counts them.
    assert result.usage[next(iter(result.usage))].generated_tokens > sum(p.num_tokens for p in result.paths)
    aborted = [t.event for t in events if isinstance(t.event, PathEvent) and t.event.aborted]
    assert sorted(e.index for e in aborted) == [4, 5, 6, 7]
    assert all(e.finish_reason == "low_confidence" and e.answer is None for e in aborted)


async def test_pipeline_without_the_abort_samples_one_request():
    engine = ScriptedEngine(paths=(path("7"),))
    result = await GuardPipeline(engine).run(GuardParams("What is 3 + 4?", num_paths=4, scorer="majority"))
    assert engine.calls == [("sample", 4)] and result.sampling.aborted_low_confidence == 0


@pytest.mark.parametrize(("field", "value"), [("confidence_warmup", 0), ("confidence_keep", 0.0),
                                              ("confidence_keep", 1.5), ("confidence_abort", 1)])
def test_confidence_knobs_are_validated(field, value):
    from guard.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as info:
        GuardParams("q", **{field: value})
    assert info.value.field == field


def test_report_fields_default_to_no_abort():
    from guard.sampling import SamplingReport

    report = SamplingReport.fixed(8)
    assert (report.aborted_low_confidence, report.confidence_threshold, report.low_confidence_tokens) == (0, None, 0)


def test_the_warmup_is_the_first_paths_started_not_the_first_to_finish():
    from guard.engine import Completion

    watch = ConfidenceWatch(AbortRule(warmup=2, keep=0.9, window=2))
    # Path 5 ends first (a short one) and is not part of the warm-up, whatever its confidence.
    watch.finished(5, Completion("x", 2, "stop", top_logprobs=[UNSURE, UNSURE]))
    watch.finished(0, Completion("x", 3, "stop", top_logprobs=[SURE] * 3))
    assert watch.threshold is None
    watch.finished(1, Completion("x", 3, "stop", top_logprobs=[SURE] * 3))
    assert watch.threshold == pytest.approx(1.55)
