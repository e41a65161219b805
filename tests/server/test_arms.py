"""A/B arms: split proportions and stickiness (pure), and the arm over a real channel with metrics."""

import asyncio
import urllib.request

import grpc
import pytest

from guard.errors import InvalidArgumentError
from server.arms import Arm, ArmSplitter, Assignment, bucket, check_ab_key
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.scripted_engine import ScriptedEngine
from tests.server.conftest import start_server, stop_server

KEYS = [f"user-{i}" for i in range(20000)]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_split_proportion_matches_fraction(fraction):
    splitter = ArmSplitter(fraction)
    guarded = sum(splitter.assign(k)[0] is Arm.GUARD for k in KEYS)
    # Binomial sd at n=20000 is at most 0.0035; 0.015 is > 4 sd.
    assert abs(guarded / len(KEYS) - fraction) < 0.015


def test_split_is_sticky_and_monotonic_in_the_fraction():
    low, high = ArmSplitter(0.2), ArmSplitter(0.6)
    for key in KEYS[:2000]:
        assert low.assign(key) == low.assign(key)
        if low.assign(key)[0] is Arm.GUARD:
            # Raising the fraction only moves keys from raw to guard, never back.
            assert high.assign(key)[0] is Arm.GUARD


def test_shadow_replaces_raw_and_override_wins():
    splitter = ArmSplitter(0.0, shadow=True)
    assert splitter.assign("k") == (Arm.SHADOW, Assignment.SPLIT)
    assert splitter.assign("k", Arm.GUARD) == (Arm.GUARD, Assignment.OVERRIDE)
    assert 0 <= bucket("anything") < 1


@pytest.mark.parametrize("bad", [2.0, -0.1])
def test_fraction_is_validated(bad):
    with pytest.raises(ValueError):
        ArmSplitter(bad)


def test_ab_key_is_validated():
    assert check_ab_key("user-1") == "user-1"
    with pytest.raises(InvalidArgumentError) as err:
        check_ab_key("x" * 300)
    assert err.value.field == "ab_key"


def _scrape(handle) -> str:
    url = f"http://127.0.0.1:{handle.server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


async def test_arm_in_response_and_metrics_over_grpc():
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"], probe=lambda path, sub: "12")
    handle = await start_server(engine, guard_fraction=0.5)
    try:
        stub = guard_pb2_grpc.GuardServiceStub(handle.channel)
        keys = [f"u{i}" for i in range(40)]
        responses = await asyncio.gather(
            *(stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=2, ab_key=k)) for k in keys)
        )
        splitter = ArmSplitter(0.5)
        for key, resp in zip(keys, responses):
            expected = splitter.assign(key)[0]
            assert resp.arm == (pb.ARM_GUARD if expected is Arm.GUARD else pb.ARM_RAW)
            assert resp.decision == (pb.DECISION_RAW if expected is Arm.RAW else pb.DECISION_ACCEPT)
            assert len(resp.paths) == (2 if expected is Arm.GUARD else 1)
        # Same key again: same arm (sticky across calls).
        again = await stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=2, ab_key=keys[0]))
        assert again.arm == responses[0].arm
        # A per-request override beats the split; an explicit mode counts as one.
        forced = await stub.Guard(pb.GuardRequest(question="7 + 5?", num_paths=2, arm=pb.ARM_GUARD, ab_key=keys[0]))
        assert forced.arm == pb.ARM_GUARD and forced.decision == pb.DECISION_ACCEPT
        raw = await stub.Guard(pb.GuardRequest(question="7 + 5?", mode=pb.MODE_RAW))
        assert raw.arm == pb.ARM_RAW
        n_guard = sum(splitter.assign(k)[0] is Arm.GUARD for k in keys) + (splitter.assign(keys[0])[0] is Arm.GUARD)
        text = await asyncio.to_thread(_scrape, handle)
        assert f'trace_guard_arm_requests_total{{arm="guard",assignment="split"}} {float(n_guard)}' in text
        assert 'trace_guard_arm_requests_total{arm="guard",assignment="override"} 1.0' in text
        assert 'trace_guard_decisions_total{arm="raw",decision="raw",reason=""}' in text
        info = await stub.GetInfo(pb.GetInfoRequest())
        assert info.guard_fraction == 0.5 and not info.shadow
        # Shadow is off on this server: asking for it is a client error naming the arm.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Guard(pb.GuardRequest(question="7 + 5?", arm=pb.ARM_SHADOW))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("arm")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Guard(pb.GuardRequest(question="7 + 5?", arm=7))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("arm")
    finally:
        await stop_server(handle)
