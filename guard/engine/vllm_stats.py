"""Prefix-cache and scheduler counters of the in-process vLLM engine, fed by a vLLM stat logger."""

from __future__ import annotations

from typing import Any


class EngineStats:
    """Counters fed by the stat logger vLLM calls from its output-handler task (event-loop thread)."""

    def __init__(self) -> None:
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prefix_requests = 0
        # Scheduler view of the last engine step (the engine core's own request counts).
        self.scheduler_running = 0
        self.scheduler_waiting = 0
        # Lifetime engine requests finished (stopped, cut at their limit or aborted) and tokens generated,
        # as the engine counts them: aborted requests' partial tokens included.
        self.finished_requests = 0
        self.generation_tokens = 0

    def work(self) -> dict[str, int]:
        """Lifetime engine requests finished and tokens generated."""
        return {"finished_requests": self.finished_requests, "generation_tokens": self.generation_tokens}

    def prefix_cache(self) -> dict[str, int]:
        """Lifetime prefix-cache token counters (queries, hits) and the requests they came from."""
        return {"queries": self.prefix_queries, "hits": self.prefix_hits, "requests": self.prefix_requests}


def stat_logger_factory(stats: EngineStats) -> Any:
    """A per-engine StatLoggerFactory that accumulates prefix-cache counters into `stats`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _GuardStatLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if iteration_stats is not None:
                stats.finished_requests += len(iteration_stats.finished_requests)
                stats.generation_tokens += iteration_stats.num_generation_tokens
            if scheduler_stats is None:
                return
            pcs = scheduler_stats.prefix_cache_stats
            if pcs is not None:
                # Stats arrive as per-step deltas; keep lifetime totals.
                stats.prefix_queries += pcs.queries
                stats.prefix_hits += pcs.hits
                stats.prefix_requests += pcs.requests
            stats.scheduler_running = scheduler_stats.num_running_reqs
            stats.scheduler_waiting = scheduler_stats.num_waiting_reqs

        def log_engine_initialized(self) -> None:
            pass

    def factory(vllm_config: Any, engine_index: int = 0) -> Any:
        return _GuardStatLogger(vllm_config, engine_index)

    return factory
