"""Replica choice for upstream model servers: a consistent-hash ring with per-replica health."""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


def _hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


@dataclass
class ReplicaState:
    """What the engine knows about one upstream server."""

    url: str
    healthy: bool = False
    # Last error seen (health check or request), for logs and GetInfo.
    last_error: str = ""
    last_change_monotonic: float = field(default_factory=time.monotonic)
    # Request outcomes, exported as metrics: "ok", "error" (the replica failed), "failover".
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class ReplicaRing:
    """Maps a routing key to an ordered list of replicas: its home replica first, then the rest.

    Consistent hashing with virtual nodes: adding or removing one replica moves only the keys
    that hashed to it, so the other replicas keep their prefix caches warm. All the engine work
    of one request (paths, ARS, probes, scores) uses the same key, hence the same replica.
    """

    def __init__(self, urls: Sequence[str], virtual_nodes: int = 64):
        if not urls:
            raise ValueError("at least one upstream URL is needed")
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate upstream URLs: {list(urls)}")
        self.replicas = [ReplicaState(url) for url in urls]
        points = []
        for index, url in enumerate(urls):
            for v in range(virtual_nodes):
                points.append((_hash(f"{url}#{v}"), index))
        points.sort()
        self._points = [p for p, _ in points]
        self._owners = [i for _, i in points]

    def order(self, key: str) -> list[ReplicaState]:
        """Every replica, in the order the key tries them (home replica first)."""
        start = bisect.bisect(self._points, _hash(key)) % len(self._points)
        seen: list[int] = []
        for j in range(len(self._points)):
            owner = self._owners[(start + j) % len(self._points)]
            if owner not in seen:
                seen.append(owner)
                if len(seen) == len(self.replicas):
                    break
        return [self.replicas[i] for i in seen]

    def candidates(self, key: str) -> list[ReplicaState]:
        """Healthy replicas first (in ring order), then the unhealthy ones as a last resort."""
        ordered = self.order(key)
        return [r for r in ordered if r.healthy] + [r for r in ordered if not r.healthy]

    def mark(self, replica: ReplicaState, healthy: bool, error: str = "") -> bool:
        """Record a health observation; True when the replica's state changed."""
        replica.last_error = error if not healthy else ""
        if replica.healthy == healthy:
            return False
        replica.healthy = healthy
        replica.last_change_monotonic = time.monotonic()
        return True

    @property
    def any_healthy(self) -> bool:
        return any(r.healthy for r in self.replicas)
