"""Assembles and runs the sidecar: gRPC server, health and reflection, metrics endpoint, engine lifecycle."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from guard.engine import Engine
from guard.errors import EngineError
from guard.params import Mode
from guard.pipeline import GuardConfig, GuardPipeline
from server.admission import Admission
from server.arms import ArmSplitter
from server.auth import BearerAuthInterceptor, server_credentials
from server.decision_log import DecisionLog
from server.handler import RequestHandler
from server.interceptors import ErrorInterceptor
from server.metrics import GuardMetrics
from server.options import ServerOptions
from server.pb import guard_pb2, guard_pb2_grpc
from server.servicer import GuardServicer
from server.shadow import ShadowRunner

logger = logging.getLogger(__name__)

SERVICE_NAME = guard_pb2.DESCRIPTOR.services_by_name["GuardService"].full_name


class GuardServer:
    def __init__(self, engine: Engine, config: GuardConfig, options: ServerOptions, metrics: GuardMetrics | None = None):
        self.engine = engine
        self.options = options
        self.metrics = metrics or GuardMetrics()
        self.metrics.watch_engine(engine)
        self.pipeline = GuardPipeline(engine, config)
        self.admission = Admission(options.max_concurrent_requests, options.max_queued_requests)
        fraction = options.guard_fraction
        if fraction is None:
            fraction = 1.0 if config.defaults.mode is Mode.GUARD else 0.0
        self.decision_log = (
            DecisionLog(options.decision_log_path, max_bytes=options.decision_log_max_bytes,
                        backups=options.decision_log_backups)
            if options.decision_log_path else None
        )
        self.shadow = (
            ShadowRunner(self.pipeline, self.metrics, self.decision_log, max_pending=options.shadow_max_pending,
                         max_concurrent=options.shadow_max_concurrent)
            if options.shadow else None
        )
        self.handler = RequestHandler(
            self.pipeline, self.metrics, self.admission, ArmSplitter(fraction, options.shadow),
            self.decision_log, self.shadow,
        )
        self.servicer = GuardServicer(self.handler)
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.engine_failed: BaseException | None = None
        self._server: grpc.aio.Server | None = None
        self._metrics_http = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        self.metrics.engine_ready.set(1 if serving else 0)

    async def start(self) -> None:
        """Bind and serve at once (health NOT_SERVING), then load the engine in the background."""
        opts = self.options
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if opts.auth_token:
            interceptors.append(BearerAuthInterceptor(opts.auth_token, health_open=opts.auth_health_open))
        interceptors.append(ErrorInterceptor(self.metrics))
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", opts.max_message_bytes),
                ("grpc.max_send_message_length", opts.max_message_bytes),
            ],
        )
        guard_pb2_grpc.add_GuardServiceServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        address = f"{opts.host}:{opts.port}"
        if opts.tls_cert_file and opts.tls_key_file:
            creds = server_credentials(opts.tls_cert_file, opts.tls_key_file, opts.tls_client_ca_file)
            self.port = self._server.add_secure_port(address, creds)
        elif opts.tls_cert_file or opts.tls_key_file or opts.tls_client_ca_file:
            raise ValueError("TLS needs both a certificate and a key")
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind {opts.host}:{opts.port}")
        await self._set_serving(False)
        await self._server.start()
        if opts.metrics_port is not None:
            self._metrics_http, _ = start_http_server(opts.metrics_port, addr=opts.host, registry=self.metrics.registry)
            self.metrics_port = self._metrics_http.server_address[1]
        logger.info("gRPC on %s:%s, metrics on %s", opts.host, self.port, self.metrics_port)
        if opts.port_file:
            ports = json.dumps({"port": self.port, "metrics_port": self.metrics_port})
            await asyncio.to_thread(Path(opts.port_file).write_text, ports)
        self._tasks.append(asyncio.create_task(self._start_engine()))

    async def _start_engine(self) -> None:
        try:
            await self.engine.start()
        except Exception as exc:
            logger.exception("engine failed to start")
            self.engine_failed = exc
            self._stopped.set()
            return
        await self._set_serving(True)
        logger.info("engine ready: %s", self.engine.info())
        self._tasks.append(asyncio.create_task(self._watch_engine()))

    async def _watch_engine(self) -> None:
        """Health follows the engine: NOT_SERVING while it fails its checks, SERVING once it passes.

        A dead engine (not merely slow) is restarted up to `max_engine_restarts` times; requests in
        the meantime get UNAVAILABLE (retryable)."""
        healthy = True
        restarts = 0
        while True:
            await asyncio.sleep(self.options.health_check_interval_seconds)
            try:
                await self.engine.check_health()
                ok = True
            except EngineError as exc:
                if healthy:
                    logger.error("engine unhealthy: %s", exc)
                ok = False
            if ok != healthy and not self.handler.draining:
                await self._set_serving(ok)
                if ok:
                    logger.info("engine healthy again")
            healthy = ok
            if ok or self.engine.ready or self.handler.draining:
                continue
            if restarts >= self.options.max_engine_restarts:
                logger.error("engine dead and %d restart(s) used up; stopping", restarts)
                self.engine_failed = EngineError("engine died and could not be restarted")
                self._stopped.set()
                return
            restarts += 1
            self.metrics.engine_restarts.inc()
            logger.warning("engine dead; restarting it (%d of %d)", restarts, self.options.max_engine_restarts)
            try:
                await self.engine.restart()
            except Exception:
                logger.exception("engine restart failed")

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, let in-flight ones finish within the grace period."""
        if self._server is None:
            return
        grace = self.options.grace_seconds if grace is None else grace
        self.handler.draining = True
        await self._set_serving(False)
        for task in self._tasks:
            task.cancel()
        started = asyncio.get_running_loop().time()
        await self._server.stop(grace)
        if self.shadow is not None:
            # Shadow work of answered requests gets what is left of the grace period.
            await self.shadow.drain(grace - (asyncio.get_running_loop().time() - started))
        if self.decision_log is not None:
            # Every record accepted so far reaches the disk before the process exits.
            await asyncio.to_thread(self.decision_log.close)
        await self.engine.shutdown()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self._server = None
        self._stopped.set()

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT (then drain) or until the engine fails to start."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        waiters = [asyncio.create_task(stop_requested.wait()), asyncio.create_task(self._stopped.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        logger.info("shutting down (grace %.0fs)", self.options.grace_seconds)
        await self.stop()
        if self.engine_failed is not None:
            raise SystemExit(f"engine failed: {self.engine_failed}")
