"""Prometheus metrics of the sidecar: built on an explicit registry, filled from the pipeline's result stats."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from guard.result import GuardResult
from guard.stages import Stage

# Guarded requests on CPU take seconds; on GPU, tens to hundreds of milliseconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
FFS_BUCKETS = (1, 2, 3, 4, 5, 6, 8)
PATHS_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 12, 16, 32, 64)


class GuardMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self._add_latency_metrics(self.registry)
        self._add_decision_metrics(self.registry)
        self._add_cost_metrics(self.registry)
        self._add_serving_metrics(self.registry)
        self._add_ab_metrics(self.registry)

    def _add_latency_metrics(self, r: CollectorRegistry) -> None:
        """Where the time of a request goes."""
        self.request_duration = Histogram(
            "trace_guard_request_duration_seconds", "End-to-end latency of Guard calls.",
            ["mode", "decision", "arm"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stage_duration = Histogram(
            "trace_guard_stage_duration_seconds", "Wall time per pipeline stage.",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stream_provisional = Histogram(
            "trace_guard_stream_provisional_seconds", "GuardStream: time from the call to the provisional answer.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stream_decision = Histogram(
            "trace_guard_stream_decision_seconds", "GuardStream: time from the call to the decision event.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stream_decisions = Counter(
            "trace_guard_stream_decisions_total", "GuardStream decisions by what they did to the provisional answer: "
            "commit, retract (reason abstain or changed), or none (no provisional answer was sent).",
            ["outcome", "reason"], registry=r,
        )
        self.overhead = Histogram(
            "trace_guard_overhead_seconds", "Time per request not spent waiting on the engine.",
            buckets=OVERHEAD_BUCKETS, registry=r,
        )

    def _add_decision_metrics(self, r: CollectorRegistry) -> None:
        """What the guard decided and the evidence it decided on."""
        self.decisions = Counter(
            "trace_guard_decisions_total", "Decisions by outcome and abstain reason (the rejection rate).",
            ["decision", "reason", "arm"], registry=r,
        )
        self.regions = Counter(
            "trace_guard_regions_total", "Confidence regions of guarded answers.", ["region"], registry=r,
        )
        self.ars_sources = Counter(
            "trace_guard_ars_source_total", "Where each request's Auxiliary Reasoning Set came from.",
            ["source"], registry=r,
        )
        self.first_failure_step = Histogram(
            "trace_guard_first_failure_step", "First Failure Step of paths that departed from the consensus.",
            buckets=FFS_BUCKETS, registry=r,
        )
        self.sub_questions = Counter(
            "trace_guard_sub_questions_total",
            "Sub-questions by kind (restated: restates the question, so not probed; echo: answered with each "
            "path's own final answer, left out of support and FFS; informative: the rest).", ["kind"], registry=r,
        )
        self.probe_answers_missing = Counter(
            "trace_guard_probe_answers_missing_total",
            "Probe answers that could not be read (left out of agreement, not counted as disagreement).",
            registry=r,
        )
        self.probe_answers = Counter(
            "trace_guard_probe_answers_total",
            "Read probe answers by source: the path's own final answer (an echo), another value the path "
            "wrote in its working (path_value), or neither (other).", ["source"], registry=r,
        )

    def _add_cost_metrics(self, r: CollectorRegistry) -> None:
        """Engine work per request: paths, tokens, cut completions, stages skipped for a budget."""
        self.paths = Counter("trace_guard_paths_total", "Reasoning paths sampled.", registry=r)
        self.paths_used = Histogram(
            "trace_guard_paths_used", "Paths that finished and voted, per guarded request (adaptive sampling "
            "stops early).", buckets=PATHS_BUCKETS, registry=r,
        )
        self.paths_skipped = Counter(
            "trace_guard_adaptive_paths_skipped_total", "Paths adaptive sampling did not finish: aborted "
            "unfinished when the vote settled, or never started.", ["outcome"], registry=r,
        )
        self.paths_low_confidence = Counter(
            "trace_guard_paths_aborted_low_confidence_total", "Paths the confidence abort (online DeepConf) "
            "stopped mid-generation because their token confidence collapsed; they do not vote.", registry=r,
        )
        self.sampling_stops = Counter(
            "trace_guard_sampling_stops_total", "Why guarded requests stopped sampling (fixed, settled, max_paths).",
            ["reason"], registry=r,
        )
        self.tokens_saved = Counter(
            "trace_guard_sample_tokens_saved_total", "Generated tokens adaptive sampling and the confidence "
            "abort saved against the fixed-N plan, estimated with the mean tokens of the finished paths: a "
            "mean path per path never started, and per low-confidence abort what a mean path has past the "
            "tokens it had generated (vote-settled aborts cannot happen: see guard/sampling.py).", registry=r,
        )
        self.tokens = Counter(
            "trace_guard_tokens_total", "Tokens by pipeline phase and kind (prompt, generated, cached).",
            ["phase", "kind"], registry=r,
        )
        self.truncated = Counter(
            "trace_guard_truncated_completions_total",
            "Completions cut at their token limit, by phase (sample: no answer read; probe: value unreadable).",
            ["phase"], registry=r,
        )
        self.degraded = Counter(
            "trace_guard_degraded_stages_total", "Optional stages skipped or cut short by a latency budget.",
            ["stage"], registry=r,
        )

    def _add_serving_metrics(self, r: CollectorRegistry) -> None:
        """Load, errors and the engine's health."""
        self.in_flight = Gauge("trace_guard_requests_in_flight", "Guard calls being processed.", registry=r)
        self.queued = Gauge("trace_guard_requests_queued", "Guard calls waiting for a slot.", registry=r)
        self.errors = Counter(
            "trace_guard_errors_total", "Failed calls by gRPC status code.", ["code"], registry=r,
        )
        self.engine_ready = Gauge("trace_guard_engine_ready", "1 when the engine is serving.", registry=r)
        self.engine_restarts = Counter(
            "trace_guard_engine_restarts_total", "Times a dead engine was rebuilt in-process.", registry=r,
        )
        self.engine_running = Gauge(
            "trace_guard_engine_requests_running",
            "Engine requests submitted and not yet finished or aborted (read at scrape time).", registry=r,
        )

    def _add_ab_metrics(self, r: CollectorRegistry) -> None:
        """A/B arms, shadow runs and the decision log."""
        self.arm_requests = Counter(
            "trace_guard_arm_requests_total", "Guard calls by A/B arm and how the arm was chosen (split, override).",
            ["arm", "assignment"], registry=r,
        )
        self.shadow_runs = Counter(
            "trace_guard_shadow_runs_total", "Background guard runs of shadow-arm requests by outcome "
            "(done, dropped, error, timeout, cancelled).", ["status"], registry=r,
        )
        self.shadow_dropped = Counter(
            "trace_guard_shadow_dropped_total", "Shadow guard runs dropped because the shadow queue was full.",
            registry=r,
        )
        self.shadow_pending = Gauge(
            "trace_guard_shadow_pending", "Shadow guard runs waiting or running (read at scrape time).", registry=r,
        )
        self.decision_log_records = Counter(
            "trace_guard_decision_log_records_total", "Records accepted by the decision log.", registry=r,
        )
        self.decision_log_dropped = Counter(
            "trace_guard_decision_log_dropped_total", "Records the decision log refused (queue full or closed).",
            registry=r,
        )

    def watch_engine(self, engine) -> None:
        """Read the engine's running-request count (and upstream health, if any) at every scrape."""
        self.engine_running.set_function(lambda: float(engine.num_running_requests()))
        if hasattr(engine, "replicas"):
            self.registry.register(_UpstreamCollector(engine))
        if hasattr(engine, "prefix_cache_stats"):
            self.registry.register(_PrefixCacheCollector(engine))

    def count_decision_log(self, accepted: bool) -> None:
        (self.decision_log_records if accepted else self.decision_log_dropped).inc()

    def record(self, result: GuardResult, duration_seconds: float, arm: str) -> None:
        decision = result.decision.value
        self.request_duration.labels(result.mode.value, decision, arm).observe(duration_seconds)
        for stage, ms in result.timings_ms.items():
            if stage != Stage.TOTAL:
                self.stage_duration.labels(stage).observe(ms / 1e3)
        total_ms = result.timings_ms.get(Stage.TOTAL, duration_seconds * 1e3)
        self.overhead.observe(max(0.0, total_ms - result.engine_wait_ms) / 1e3)
        reason = result.abstain_reason.value if result.abstain_reason else ""
        self.decisions.labels(decision, reason, arm).inc()
        if result.region is not None:
            self.regions.labels(result.region.value).inc()
        if result.scorer:
            self.ars_sources.labels(result.ars_source.value).inc()
        for path in result.paths:
            if path.first_failure_step is not None:
                self.first_failure_step.observe(path.first_failure_step)
        for row in result.sub_questions:
            if not row.probed:
                self.sub_questions.labels("restated").inc()
                continue
            self.sub_questions.labels("echo" if row.echo else "informative").inc()
            self.probe_answers_missing.inc(len(row.path_answers) - row.answered)
            for source in row.path_answer_sources:
                if source is not None:
                    self.probe_answers.labels(source.value).inc()
        self.paths.inc(len(result.paths))
        if result.sampling is not None:
            self._record_sampling(result)
        for stage in result.degraded_stages:
            self.degraded.labels(stage).inc()
        for phase, usage in result.usage.items():
            self.tokens.labels(phase, "prompt").inc(usage.prompt_tokens)
            self.tokens.labels(phase, "generated").inc(usage.generated_tokens)
            self.tokens.labels(phase, "cached").inc(usage.cached_prompt_tokens)
            if usage.truncated:
                self.truncated.labels(phase).inc(usage.truncated)


    def record_stream(self, retract, provisional_sent: bool, duration_seconds: float) -> None:
        """A GuardStream decision: its latency, and whether it committed or retracted the provisional answer."""
        self.stream_decision.observe(duration_seconds)
        if not provisional_sent:
            self.stream_decisions.labels("none", "").inc()
        elif retract is None:
            self.stream_decisions.labels("commit", "").inc()
        else:
            self.stream_decisions.labels("retract", retract.value).inc()

    def _record_sampling(self, result: GuardResult) -> None:
        report = result.sampling
        self.paths_used.observe(report.finished)
        self.sampling_stops.labels(report.stop_reason.value).inc()
        self.paths_low_confidence.inc(report.aborted_low_confidence)
        if report.finished:
            self.tokens_saved.inc(report.tokens_saved(sum(p.num_tokens for p in result.paths) / report.finished))
        if not report.adaptive:
            return
        self.paths_skipped.labels("aborted").inc(report.aborted)
        self.paths_skipped.labels("not_started").inc(report.not_started)


class _UpstreamCollector:
    """Health and request outcomes of each upstream replica, read from the engine at scrape time."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def describe(self):
        return []

    def collect(self):
        healthy = GaugeMetricFamily(
            "trace_guard_upstream_healthy", "1 when the upstream replica passes its health checks.", labels=["upstream"]
        )
        requests = CounterMetricFamily(
            "trace_guard_upstream_requests", "Upstream calls by replica and outcome (ok, failover, error).",
            labels=["upstream", "outcome"],
        )
        for replica in self.engine.replicas():
            healthy.add_metric([replica.url], 1.0 if replica.healthy else 0.0)
            for outcome, count in replica.outcomes.items():
                requests.add_metric([replica.url, outcome], count)
        yield healthy
        yield requests


class _PrefixCacheCollector:
    """vLLM's lifetime prefix-cache counters (prompt tokens looked up and found), read at scrape time."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def describe(self):
        return []

    def collect(self):
        stats = self.engine.prefix_cache_stats()
        if stats is None:  # engine not started yet
            return
        queries = CounterMetricFamily(
            "trace_guard_engine_prefix_cache_query_tokens", "Prompt tokens looked up in vLLM's prefix cache."
        )
        hits = CounterMetricFamily(
            "trace_guard_engine_prefix_cache_hit_tokens", "Prompt tokens found in vLLM's prefix cache (not recomputed)."
        )
        queries.add_metric([], stats["queries"])
        hits.add_metric([], stats["hits"])
        yield queries
        yield hits
        work = self.engine.engine_work() if hasattr(self.engine, "engine_work") else None
        if work is None:
            return
        finished = CounterMetricFamily(
            "trace_guard_engine_finished_requests", "Engine requests vLLM finished (stopped, cut or aborted)."
        )
        generated = CounterMetricFamily(
            "trace_guard_engine_generation_tokens", "Tokens vLLM generated, aborted requests' partial tokens included."
        )
        finished.add_metric([], work["finished_requests"])
        generated.add_metric([], work["generation_tokens"])
        yield finished
        yield generated
