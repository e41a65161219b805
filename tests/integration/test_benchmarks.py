"""Both benchmarks and calibration end to end on the real engine with tiny settings, so they keep working.

The latency benchmark's smoke run is in test_sidecar.py (it reuses the shared sidecar).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.conftest import REPO


def _run(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def test_quality_benchmark_and_calibration_smoke(tmp_path):
    cmd = ["-m", "benchmarks.quality", "--data", "svamp:model", "--data", "gsm8k:gold", "--data", "words:gold",
           "--limit", "3",
           "--num-paths", "2", "--max-tokens", "24", "--concurrency", "3", "--seed", "0", "--out", str(tmp_path)]
    first = _run(*cmd)
    assert "svamp:model: 3 to sample" in first.stdout and "gsm8k:gold: 3 to sample" in first.stdout
    assert "words:gold: 3 to sample" in first.stdout
    first_json = (tmp_path / "quality.json").read_text()
    results = json.loads(first_json)
    assert set(results) == {"svamp:model", "gsm8k:gold", "words:gold", "all"}
    for key, per_data in results.items():
        if key == "all":
            continue
        assert 0 <= per_data["greedy_accuracy"] <= 1 and 0 <= per_data["single_sample_accuracy"] <= 1
        assert all(per_data[m]["n"] == 3 for m in ("majority", "deepconf", "trace"))
    assert "greedy" in first.stdout and "trace" in first.stdout  # the printed table
    assert (tmp_path / "risk_coverage.png").stat().st_size > 1000
    records = sorted(tmp_path.glob("records-*.jsonl"))
    assert len(records) == 3 and all(len(p.read_text().splitlines()) == 3 for p in records)

    # The paired-bootstrap tables, per dataset and pooled, and the banded plot.
    assert "paired bootstrap" in first.stdout and "trace - majority" in first.stdout
    assert set(results["all"]["intervals"]["per_scorer"]) >= {"majority", "deepconf", "trace", "single", "greedy"}
    assert (tmp_path / "risk_coverage_bands.png").stat().st_size > 1000

    # Resumable: a second run re-scores the cached samples and samples nothing.
    second = _run(*cmd)
    assert "svamp:model: 0 to sample" in second.stdout and "gsm8k:gold: 0 to sample" in second.stdout
    assert (tmp_path / "quality.json").read_text() == first_json  # text: NaN != NaN as floats

    # Compute-matched votes: 3 paths without an ARS, paired with the trace rows.
    matched = _run(*cmd, "--matched", "3")
    assert "compute-matched vote: 3 paths" in matched.stdout and "trace - majority@matched" in matched.stdout

    policy = tmp_path / "policy.json"
    _run("-m", "server", "calibrate", *[a for p in records for a in ("--data", str(p))], "--target-risk", "0.5",
         "--delta", "0.2", "--splits", "3", "--out", str(policy))
    summary = json.loads(policy.read_text())["calibration"]
    assert summary["items"] == 9 and summary["resplits"]["splits"] == 3
