"""Helpers shared by the benchmarks that drive a real sidecar: start one, read its metrics and memory."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc

from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Sidecar:
    proc: subprocess.Popen | None
    address: str
    metrics_url: str | None

    def metric(self, name: str) -> float | None:
        """One unlabelled sample from the sidecar's Prometheus endpoint (None without one)."""
        if self.metrics_url is None:
            return None
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def rss_bytes(self) -> int | None:
        """Resident memory of the sidecar and its children (engine core and workers)."""
        return tree_rss_bytes(self.proc.pid) if self.proc is not None else None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(15)
        return self.proc.wait(timeout=120)


def start_sidecar(model: str | None, extra_args: list[str] = (), log_path: Path | None = None,
                  env: dict[str, str] | None = None) -> Sidecar:
    """Start `trace-guard serve` on free ports and wait until its engine is ready."""
    port_file = Path(tempfile.mkdtemp()) / "ports.json"
    cmd = [sys.executable, "-m", "server", "serve", "--port", "0", "--metrics-port", "0",
           "--port-file", str(port_file), *extra_args]
    if model:
        cmd += ["--model", model]
    out = log_path.open("w") if log_path is not None else subprocess.DEVNULL
    import os

    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    start = time.monotonic()
    try:
        while not port_file.exists():
            if proc.poll() is not None:
                raise SystemExit("sidecar failed to start")
            time.sleep(0.2)
        ports = json.loads(port_file.read_text())
        address = f"127.0.0.1:{ports['port']}"
        with grpc.insecure_channel(address) as ch:
            stub = guard_pb2_grpc.GuardServiceStub(ch)
            while True:
                if proc.poll() is not None:
                    raise SystemExit("sidecar exited while loading the engine")
                try:
                    if stub.GetInfo(pb.GetInfoRequest(), timeout=30).ready:
                        break
                except grpc.RpcError:
                    pass  # busy loading on a small machine; ask again
                time.sleep(0.5)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    print(f"sidecar ready in {time.monotonic() - start:.1f}s (cold start, model load included)", flush=True)
    return Sidecar(proc, address, f"http://127.0.0.1:{ports['metrics_port']}/metrics")


def tree_rss_bytes(pid: int) -> int:
    """Sum of VmRSS over a process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    """Poll `url` until it answers 200, failing early if `proc` exits."""
    import urllib.error

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} while starting")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise SystemExit(f"{what} did not come up within {timeout:.0f}s")


class VllmServer:
    """A real `vllm.entrypoints.openai.api_server` on 127.0.0.1 (a free port), configured like the
    sidecar's in-process engine (32-token blocks, prefix caching, no chunked prefill on CPU)."""

    def __init__(self, model_dir: str, *, served_name: str | None = None, port: int | None = None,
                 block_size: int = 32, max_model_len: int = 2048, kv_cache_gib: int = 4,
                 dtype: str = "auto", extra_args: tuple[str, ...] = (), log_path: Path | None = None):
        self.model_dir = model_dir
        self.served_name = served_name
        self.port = port or free_port()
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.kv_cache_gib = kv_cache_gib
        self.dtype = dtype
        self.extra_args = tuple(extra_args)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The OpenAI API base, e.g. http://127.0.0.1:8000/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: bool = True) -> VllmServer:
        import os

        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib)}
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
               "--host", "127.0.0.1", "--port", str(self.port), "--max-model-len", str(self.max_model_len),
               "--block-size", str(self.block_size), "--enable-prefix-caching", "--no-enable-chunked-prefill",
               "--enforce-eager", "--seed", "0", "--dtype", self.dtype,
               # usage.prompt_tokens_details.cached_tokens: the guard reports prefix-cache hits per phase.
               "--enable-prompt-tokens-details"]
        if self.served_name:
            cmd += ["--served-model-name", self.served_name]
        cmd += list(self.extra_args)
        out = self.log_path.open("w") if self.log_path is not None else subprocess.DEVNULL
        # Own process group: stop() takes the API server and its engine core down together.
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 600) -> None:
        assert self.proc is not None
        try:
            wait_http(f"http://127.0.0.1:{self.port}/health", self.proc, "vLLM api_server", timeout)
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group (a crashed replica)."""
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        import os
        import signal

        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            # The API server is gone; make sure its engine core went with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
