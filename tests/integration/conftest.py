"""One real sidecar process on the real vLLM engine with the default model, shared by the whole test run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 600


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


class Sidecar:
    def __init__(self, proc: subprocess.Popen, port: int, metrics_port: int, log_path: Path, model: str):
        self.proc = proc
        self.address = f"127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.log_path = log_path
        self.model = model

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _model_dir() -> str:
    env = os.environ.get("TRACE_GUARD_MODEL")
    if env:
        return env
    from server.model_store import ensure_default_model

    return str(ensure_default_model())


@contextlib.contextmanager
def running_sidecar(workdir: Path, model: str, extra_args: list[str], env: dict[str, str] | None = None,
                    what: str = "sidecar") -> Iterator[Sidecar]:
    """`trace-guard serve` as a subprocess on free ports until its engine is SERVING; on exit a SIGTERM
    drain that must end with exit status 0 (a crash under load must not pass unnoticed either)."""
    port_file = workdir / "ports.json"
    log_path = workdir / "sidecar.log"
    # The integration tests exercise every stage (ARS, probes, scores): they run the trace scorer, not
    # the serve default (majority, the evaluation's winner).
    cmd = [sys.executable, "-m", "server", "serve", "--model", model, "--port", "0", "--metrics-port", "0",
           "--port-file", str(port_file), "--scorer", "trace", *extra_args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    start = time.monotonic()
    drained = None
    try:
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() - start > STARTUP_TIMEOUT_SECONDS:
                raise RuntimeError(f"{what} did not bind:\n" + log_path.read_text())
            time.sleep(0.2)
        ports = json.loads(port_file.read_text())
        handle = Sidecar(proc, ports["port"], ports["metrics_port"], log_path, model)
        with grpc.insecure_channel(handle.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if proc.poll() is not None or time.monotonic() - start > STARTUP_TIMEOUT_SECONDS:
                    raise RuntimeError(f"{what} engine did not become ready:\n" + handle.log_tail())
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                except grpc.RpcError:
                    status = None  # busy loading the engine on a small machine: ask again
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.5)
        print(f"\n{what} ready in {time.monotonic() - start:.1f}s at {handle.address}")
        yield handle
    finally:
        if proc.poll() is None:
            # SIGTERM is a graceful drain: the process must exit 0 and leave no engine behind.
            proc.send_signal(signal.SIGTERM)
            try:
                drained = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    if drained != 0:
        raise RuntimeError(f"{what} exited {proc.returncode} (SIGTERM at teardown: {drained is not None}):\n"
                           + log_path.read_text()[-3000:])


@pytest.fixture(scope="session")
def sidecar(tmp_path_factory) -> Sidecar:
    with running_sidecar(tmp_path_factory.mktemp("sidecar"), _model_dir(),
                         ["--max-tokens", "96", "--grace-seconds", "5"]) as handle:
        yield handle


@pytest.fixture
def channel(sidecar):
    with grpc.insecure_channel(sidecar.address) as ch:
        yield ch


@pytest.fixture(scope="module")
async def in_process_engine():
    """The default model in an in-process vLLM engine, for tests that call the engine API directly."""
    from guard.engine.vllm_engine import VllmEngine

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    eng = VllmEngine(_model_dir(), max_model_len=2048)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.shutdown()
