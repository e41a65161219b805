"""What both engines share: input checks, top-k trimming, in-flight bookkeeping, the vLLM version pin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guard.engine import SUPPORTED_VLLM, SampleSpec
from guard.engine.inflight import InFlight, context_overflow, require_request_id
from guard.engine.tokens import require_image_support, top_k
from guard.engine.versions import vllm_supported
from guard.errors import InvalidArgumentError


def test_image_check_names_the_field_and_the_model():
    require_image_support(False, accepts_images=False, model_name="m", field="images")
    require_image_support(True, accepts_images=True, model_name="m", field="images")
    with pytest.raises(InvalidArgumentError) as err:
        require_image_support(True, accepts_images=False, model_name="SmolLM2", field="items[3].context.images")
    assert err.value.field == "items[3].context.images" and "SmolLM2 does not accept images" in str(err.value)


@pytest.mark.parametrize("values, k, best", [([-3.0, -0.5, -1.0], 2, [-0.5, -1.0]), ([-1.0], 3, [-1.0]), ([], 2, [])])
def test_top_k_keeps_the_k_best(values, k, best):
    assert top_k(values, k) == best


@pytest.mark.parametrize("kwargs, field", [({"n": 0}, "n"), ({"max_tokens": 0}, "max_tokens")])
def test_sample_spec_rejects_empty_requests(kwargs, field):
    with pytest.raises(InvalidArgumentError) as err:
        SampleSpec(**kwargs)
    assert err.value.field == field


def test_inflight_tracks_handles_per_request():
    inflight: InFlight[str] = InFlight()
    with inflight.track("r", "a"), inflight.track("r", "b"), inflight.track("s", "c"):
        assert sorted(inflight.of("r")) == ["a", "b"] and inflight.count() == 3
    assert inflight.count() == 0 and inflight.of("r") == []
    with pytest.raises(InvalidArgumentError):
        require_request_id("")
    assert context_overflow("too long").field == "question"


def test_the_cpu_extra_installs_a_supported_vllm():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    (pin,) = [r for r in project["project"]["optional-dependencies"]["cpu"] if r.startswith("vllm")]
    assert vllm_supported(re.search(r"==([\d.]+)", pin).group(1)), (pin, SUPPORTED_VLLM)
    assert not vllm_supported("0.11.0")


@pytest.mark.parametrize(
    ("cpuinfo", "fast"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n", False),             # AVX2 only
        ("flags\t\t: avx2 avx512f avx512bw\n", False),                           # AVX-512 without BF16
        ("flags\t\t: avx2 avx512f avx512_bf16\n", True),
        ("flags\t\t: avx2 amx_tile amx_bf16\n", True),
        ("", False),
    ],
)
def test_cpu_has_fast_bf16_reads_the_flags(cpuinfo, fast):
    from guard.engine.vllm_dtype import cpu_has_fast_bf16

    assert cpu_has_fast_bf16(cpuinfo) is fast


@pytest.mark.parametrize(
    ("requested", "on_cpu", "fast", "expected"),
    [("auto", True, False, "float32"), ("auto", True, True, "auto"), ("auto", False, False, "auto"),
     ("bfloat16", True, False, "bfloat16"), ("float32", True, True, "float32")],
)
def test_resolve_dtype_avoids_slow_bf16_only_when_left_to_auto(requested, on_cpu, fast, expected):
    from guard.engine.vllm_dtype import resolve_dtype

    assert resolve_dtype(requested, on_cpu, fast) == expected
