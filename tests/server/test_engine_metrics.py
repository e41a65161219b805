"""Engine-side counters the sidecar exports at scrape time: vLLM's prefix-cache tokens, requests and tokens."""

from __future__ import annotations

from prometheus_client import generate_latest

from server.metrics import GuardMetrics
from tests.scripted_engine import ScriptedEngine


class PrefixCachingEngine(ScriptedEngine):
    stats: dict[str, int] | None = None

    def prefix_cache_stats(self) -> dict[str, int] | None:
        return self.stats


def scrape(metrics: GuardMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_prefix_cache_counters_are_read_at_scrape_time():
    engine = PrefixCachingEngine()
    metrics = GuardMetrics()
    metrics.watch_engine(engine)
    # Not started yet: no samples rather than made-up zeros.
    assert "trace_guard_engine_prefix_cache" not in scrape(metrics)
    engine.stats = {"queries": 300, "hits": 128, "requests": 2}
    text = scrape(metrics)
    assert "trace_guard_engine_prefix_cache_query_tokens_total 300.0" in text
    assert "trace_guard_engine_prefix_cache_hit_tokens_total 128.0" in text
    assert "# TYPE trace_guard_engine_prefix_cache_hit_tokens_total counter" in text
    engine.stats = {"queries": 900, "hits": 700, "requests": 5}
    assert "trace_guard_engine_prefix_cache_hit_tokens_total 700.0" in scrape(metrics)


def test_engines_without_prefix_cache_stats_export_none():
    metrics = GuardMetrics()
    metrics.watch_engine(ScriptedEngine())
    assert "trace_guard_engine_prefix_cache" not in scrape(metrics)


class WorkCountingEngine(PrefixCachingEngine):
    work: dict[str, int] | None = None

    def engine_work(self) -> dict[str, int] | None:
        return self.work


def test_engine_work_counters_are_read_at_scrape_time():
    engine = WorkCountingEngine()
    engine.stats = {"queries": 10, "hits": 5, "requests": 1}
    metrics = GuardMetrics()
    metrics.watch_engine(engine)
    assert "trace_guard_engine_finished_requests" not in scrape(metrics)
    engine.work = {"finished_requests": 12, "generation_tokens": 345}
    text = scrape(metrics)
    assert "trace_guard_engine_finished_requests_total 12.0" in text
    assert "trace_guard_engine_generation_tokens_total 345.0" in text
