"""The sidecar against a separately started vLLM OpenAI server (`--upstream`): same decisions as the
in-process engine, replica affinity and failover, A/B arms and shadow mode with the decision log."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from benchmarks.sidecar import VllmServer
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.integration.conftest import REPO, _model_dir
from tests.integration.tcp_proxy import TcpProxy

QUESTION = "Tom has 7 apples and buys 5 more. How many apples does he have now?"
SUB_QUESTIONS = ["How many apples does Tom have at first?", "How many apples does he buy?"]


class UpstreamSidecar:
    def __init__(self, proc, address, metrics_url, log_path, decision_log, vllm, proxy):
        self.proc, self.address, self.metrics_url = proc, address, metrics_url
        self.log_path, self.decision_log, self.vllm, self.proxy = log_path, decision_log, vllm, proxy

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("trace_guard_"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


@pytest.fixture(scope="module")
def upstream_sidecar(tmp_path_factory):
    work = tmp_path_factory.mktemp("upstream")
    model = _model_dir()
    # float32 like the in-process test sidecar: bf16 on CPU is not batch-invariant.
    vllm = VllmServer(model, kv_cache_gib=2, dtype="float32", log_path=work / "vllm.log").start()
    # A second replica address for the same server; the failover test kills it.
    proxy = TcpProxy(vllm.port).start()
    port_file, log_path, decision_log = work / "ports.json", work / "sidecar.log", work / "decisions.jsonl"
    cmd = [sys.executable, "-m", "server", "serve", "--upstream", vllm.url,
           "--upstream", f"http://127.0.0.1:{proxy.port}/v1", "--port", "0", "--metrics-port", "0",
           "--port-file", str(port_file), "--max-tokens", "96", "--grace-seconds", "60",
           "--guard-fraction", "0.5", "--shadow", "--decision-log", str(decision_log), "--scorer", "trace"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        start = time.monotonic()
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() - start > 300:
                raise RuntimeError("upstream sidecar did not bind:\n" + log_path.read_text())
            time.sleep(0.2)
        ports = json.loads(port_file.read_text())
        handle = UpstreamSidecar(proc, f"127.0.0.1:{ports['port']}",
                                 f"http://127.0.0.1:{ports['metrics_port']}/metrics", log_path, decision_log,
                                 vllm, proxy)
        with grpc.insecure_channel(handle.address) as ch:
            stub = guard_pb2_grpc.GuardServiceStub(ch)
            while not stub.GetInfo(pb.GetInfoRequest(), timeout=10).ready:
                if proc.poll() is not None or time.monotonic() - start > 300:
                    raise RuntimeError("upstream sidecar not ready:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
        yield handle
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        proxy.close()
        vllm.stop()


def _guard(address: str, **fields) -> pb.GuardResponse:
    with grpc.insecure_channel(address) as ch:
        return guard_pb2_grpc.GuardServiceStub(ch).Guard(pb.GuardRequest(**fields), timeout=300)


def _comparable(resp: pb.GuardResponse) -> dict:
    return {
        "decision": resp.decision, "answer": resp.answer.normalized, "region": resp.region,
        "abstain_reason": resp.abstain_reason, "vote_share": round(resp.vote_share, 6),
        "paths": [(p.answer.normalized, p.num_tokens, p.finish_reason, p.text, p.in_winning_cluster, p.first_failure_step)
                  for p in resp.paths],
        "ars": [(r.sub_question, r.modal_answer, round(r.agreement, 6), list(r.path_answers)) for r in resp.sub_questions],
        "model": resp.model, "scorer": resp.scorer, "ars_source": resp.ars_source, "threshold": resp.threshold,
        "usage_phases": sorted(u.phase for u in resp.usage),
        "notes": list(resp.notes), "degraded_stages": list(resp.degraded_stages),
    }


def _soft_values(resp: pb.GuardResponse) -> list[float]:
    """The values computed from prompt logprobs: equal between engines only up to float32 noise (rounding
    them could still split a pair that straddles a rounding boundary)."""
    return ([r.soft_agreement for r in resp.sub_questions] + [p.score for p in resp.paths]
            + [p.support for p in resp.paths])


@pytest.fixture
def inprocess_float32(tmp_path_factory):
    """An in-process sidecar in float32 like the upstream server: bf16 on CPU is not batch-invariant
    (its outputs change with what else is in the batch), so only float32 engines compare exactly."""
    from benchmarks.sidecar import start_sidecar

    work = tmp_path_factory.mktemp("inprocess-fp32")
    handle = start_sidecar(_model_dir(), ["--dtype", "float32", "--max-tokens", "96"], log_path=work / "sidecar.log",
                           env={"VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield handle
    finally:
        assert handle.stop() == 0


def test_upstream_gives_the_same_response_as_the_in_process_engine(inprocess_float32, upstream_sidecar):
    request = {"question": QUESTION, "sub_questions": SUB_QUESTIONS, "num_paths": 4, "temperature": 0.8, "seed": 1234,
                   "max_tokens": 64, "scorer": "trace", "score_mode": "contested", "mode": pb.MODE_GUARD,
                   "return_paths_text": True}
    local = _guard(inprocess_float32.address, **request)
    remote = _guard(upstream_sidecar.address, **request)
    assert remote.arm == pb.ARM_GUARD
    assert _comparable(remote) == _comparable(local)
    # Soft scores come from prompt logprobs computed in different batches (float32): equal up to noise.
    assert remote.confidence == pytest.approx(local.confidence, abs=1e-3)
    for name, value in local.features.items():
        assert remote.features[name] == pytest.approx(value, abs=1e-3), name
    assert _soft_values(remote) == pytest.approx(_soft_values(local), abs=1e-3)
    with grpc.insecure_channel(upstream_sidecar.address) as ch:
        info = guard_pb2_grpc.GuardServiceStub(ch).GetInfo(pb.GetInfoRequest(), timeout=10)
    assert info.engine == "vllm-openai" and info.model == remote.model and info.shadow and info.guard_fraction == 0.5


def test_requests_fail_over_when_a_replica_is_killed(upstream_sidecar):
    def call(i: int) -> pb.GuardResponse:
        return _guard(upstream_sidecar.address, question=QUESTION, request_id=f"fo-{i}", arm=pb.ARM_RAW,
                      max_tokens=16)

    for i in range(8):
        assert call(i).decision == pb.DECISION_RAW
    before = upstream_sidecar.metrics()
    proxied = f'upstream="http://127.0.0.1:{upstream_sidecar.proxy.port}/v1"'
    direct = f'upstream="{upstream_sidecar.vllm.url}"'
    assert before[f"trace_guard_upstream_healthy{{{proxied}}}"] == 1.0
    # Both replicas served some of the requests (each request id sticks to its home replica).
    assert before.get(f'trace_guard_upstream_requests_total{{outcome="ok",{proxied}}}', 0) > 0
    assert before.get(f'trace_guard_upstream_requests_total{{outcome="ok",{direct}}}', 0) > 0
    upstream_sidecar.proxy.kill()
    # Every request still succeeds: those homed on the dead replica move to the live one.
    for i in range(8):
        assert call(i).decision == pb.DECISION_RAW
    after = upstream_sidecar.metrics()
    assert after[f"trace_guard_upstream_healthy{{{proxied}}}"] == 0.0
    assert after[f"trace_guard_upstream_healthy{{{direct}}}"] == 1.0
    failovers = after.get(f'trace_guard_upstream_requests_total{{outcome="failover",{direct}}}', 0)
    errors = after.get(f'trace_guard_upstream_requests_total{{outcome="error",{proxied}}}', 0)
    healthy_ok = after.get(f'trace_guard_upstream_requests_total{{outcome="ok",{direct}}}', 0)
    # Either a call hit the dead replica and failed over, or the health loop saw it first.
    assert failovers + healthy_ok > before.get(f'trace_guard_upstream_requests_total{{outcome="ok",{direct}}}', 0)
    assert (failovers > 0) == (errors > 0)


def test_ab_arms_and_shadow_reach_metrics_and_the_decision_log(upstream_sidecar):
    from server.arms import Arm, ArmSplitter

    splitter = ArmSplitter(0.5, shadow=True)
    keys = [f"user-{i}" for i in range(40)]
    guard_key = next(k for k in keys if splitter.assign(k)[0] is Arm.GUARD)
    shadow_key = next(k for k in keys if splitter.assign(k)[0] is Arm.SHADOW)
    common = {"question": QUESTION, "sub_questions": SUB_QUESTIONS, "num_paths": 3, "max_tokens": 48, "seed": 7}
    guarded = _guard(upstream_sidecar.address, ab_key=guard_key, request_id="ab-guard", **common)
    shadowed = _guard(upstream_sidecar.address, ab_key=shadow_key, request_id="ab-shadow", **common)
    assert guarded.arm == pb.ARM_GUARD and guarded.decision in (pb.DECISION_ACCEPT, pb.DECISION_ABSTAIN)
    assert shadowed.arm == pb.ARM_SHADOW and shadowed.decision == pb.DECISION_RAW and len(shadowed.paths) == 1
    deadline = time.monotonic() + 300
    while upstream_sidecar.metrics().get("trace_guard_shadow_pending", 1) > 0:
        assert time.monotonic() < deadline, "shadow run did not finish"
        time.sleep(0.5)
    time.sleep(1.5)  # the log writer flushes every second
    records = {}
    for line in upstream_sidecar.decision_log.read_text().splitlines():
        record = json.loads(line)
        records[record["request_id"]] = record
    assert records["ab-guard"]["arm"] == "guard" and records["ab-guard"]["guarded"]["paths"]
    shadow = records["ab-shadow"]
    assert shadow["arm"] == "shadow" and shadow["shadow_status"] == "done"
    assert shadow["raw"]["decision"] == "raw" and len(shadow["guarded"]["paths"]) == 3
    assert [row["sub_question"] for row in shadow["guarded"]["ars"]] == SUB_QUESTIONS
    m = upstream_sidecar.metrics()
    assert any(re.match(r'trace_guard_decisions_total\{arm="shadow",decision="(accept|abstain)"', k) for k in m)
    assert any(k.startswith('trace_guard_request_duration_seconds_count{arm="guard"') for k in m)
    assert m["trace_guard_shadow_runs_total{status=\"done\"}"] >= 1
    # The training-set export reads the live log.
    out = upstream_sidecar.decision_log.with_name("traces.jsonl")
    done = subprocess.run([sys.executable, "-m", "server", "export-traces", "--log", str(upstream_sidecar.decision_log),
                           "--out", str(out), "--min-support", "0", "--regions", "reliable,silent_risk,uncertain"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["records"] >= 2
    assert stats["examples"] == len(out.read_text().splitlines())
