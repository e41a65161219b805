import pytest

from benchmarks.steps import least_ratio, step_seconds


def test_step_time_is_the_difference_of_two_runs_over_their_extra_steps():
    # 2 s of prefill and overhead in both runs; 0.1 s a step.
    assert step_seconds((2.0 + 8 * 0.1, 8), (2.0 + 40 * 0.1, 40)) == pytest.approx(0.1)


def test_step_time_needs_more_steps_in_the_long_run():
    with pytest.raises(ValueError):
        step_seconds((1.0, 8), (1.5, 8))


@pytest.mark.parametrize("steps, concurrency, paths, expected", [
    ({16: 0.1, 128: 0.1}, 16, 8, 1.0),     # memory-bound: extra paths are free
    ({16: 0.1, 128: 0.8}, 16, 8, 8.0),     # compute-bound: they cost in full
    ({1: 0.05, 8: 0.07}, 1, 8, 1.4),
    ({16: 0.1}, 16, 8, None),              # 128 not measured
])
def test_least_ratio(steps, concurrency, paths, expected):
    ratio = least_ratio(steps, concurrency, paths)
    assert ratio == (pytest.approx(expected) if expected is not None else None)
