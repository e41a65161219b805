"""The consistent-hash ring that routes each request to one upstream replica."""

from collections import Counter

import pytest

from guard.engine.upstream import ReplicaRing

URLS = [f"http://10.0.0.{i}:8000/v1" for i in range(4)]
KEYS = [f"req-{i}" for i in range(4000)]


def test_order_is_stable_and_covers_every_replica():
    ring = ReplicaRing(URLS)
    for key in KEYS[:200]:
        order = [r.url for r in ring.order(key)]
        assert sorted(order) == sorted(URLS)
        assert order == [r.url for r in ReplicaRing(URLS).order(key)]  # same on another sidecar


def test_keys_spread_over_replicas():
    ring = ReplicaRing(URLS)
    homes = Counter(ring.order(k)[0].url for k in KEYS)
    assert set(homes) == set(URLS)
    assert max(homes.values()) / min(homes.values()) < 2.0


def test_removing_a_replica_moves_only_its_keys():
    full, smaller = ReplicaRing(URLS), ReplicaRing(URLS[:3])
    for key in KEYS:
        home = full.order(key)[0].url
        if home != URLS[3]:
            assert smaller.order(key)[0].url == home
        else:
            # Its keys go to what was their second choice.
            assert smaller.order(key)[0].url == full.order(key)[1].url


def test_candidates_put_healthy_replicas_first_in_ring_order():
    ring = ReplicaRing(URLS)
    for r in ring.replicas:
        ring.mark(r, True)
    order = ring.order("k")
    assert ring.mark(order[0], False, "down") is True
    assert ring.mark(order[0], False, "down") is False
    assert [r.url for r in ring.candidates("k")] == [r.url for r in order[1:]] + [order[0].url]
    assert order[0].last_error == "down"
    for r in ring.replicas:
        ring.mark(r, False)
    assert not ring.any_healthy


def test_bad_upstream_lists_are_refused():
    with pytest.raises(ValueError):
        ReplicaRing([])
    with pytest.raises(ValueError):
        ReplicaRing([URLS[0], URLS[0]])
