"""Placement of the vLLM CPU backend's compute threads."""

import pytest

from guard.engine.cpu_threads import BIND_ENV, omp_threads_bind


@pytest.mark.parametrize(
    "cpus, environ, expected",
    [
        ([0, 1], {}, "0,1"),                       # a 2-CPU machine: both, none kept for the scheduler
        ([3, 1, 2, 0], {}, "0,1,2,3"),
        ([4, 6], {}, "4,6"),                       # the CPUs this process may use, not 0..n-1
        ([0], {}, None),                           # nothing to gain
        (list(range(8)), {}, None),                # enough CPUs: vLLM's own placement
        ([0, 1], {BIND_ENV: "0"}, None),           # the operator's choice stands
        ([0, 1], {BIND_ENV: "nobind"}, None),
    ],
)
def test_small_machines_bind_every_cpu_unless_told_otherwise(cpus, environ, expected):
    assert omp_threads_bind(cpus, environ) == expected
