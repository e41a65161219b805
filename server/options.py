"""The sidecar's process-wide settings (`trace-guard serve` flags take their defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 50051
    # None: no metrics endpoint; 0: a free port.
    metrics_port: int | None = 9464
    max_concurrent_requests: int = 8
    max_queued_requests: int = 64
    grace_seconds: float = 30.0
    max_message_bytes: int = 64 * 1024 * 1024
    health_check_interval_seconds: float = 5.0
    # A dead engine is rebuilt in-process this many times; after that the server stops (exit
    # non-zero) so a supervisor can replace the whole process.
    max_engine_restarts: int = 3
    # Written once the ports are bound: {"port": ..., "metrics_port": ...} (for scripts and tests).
    port_file: str | None = None
    # Bearer token required on every call (None: no auth); health checks stay open if health_open.
    auth_token: str | None = None
    auth_health_open: bool = True
    # TLS: certificate chain and key; with a client CA, mutual TLS.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    # A/B split: share of requests (by hash of ab_key / request_id) served by the guard; None:
    # all of them when the default mode is GUARD, none when it is RAW.
    guard_fraction: float | None = None
    # Requests outside the guarded arm get the raw answer and are guarded in the background.
    shadow: bool = False
    shadow_max_pending: int = 32
    shadow_max_concurrent: int = 2
    # JSONL decision log (None: off), rotated by size.
    decision_log_path: str | None = None
    decision_log_max_bytes: int = 64 * 1024 * 1024
    decision_log_backups: int = 5
