"""Images through the upstream engine: the plumbing VLM behind a separately started vLLM server.

A module of its own so its engines are stopped before the next module's start (engines are
several GiB each on CPU)."""

from __future__ import annotations

import pytest

from benchmarks.sidecar import VllmServer
from server.pb import guard_pb2 as pb
from tests.integration.test_upstream import _guard


@pytest.fixture(scope="module")
def vision_upstream_sidecar(tmp_path_factory):
    """The plumbing VLM behind a vLLM server, guarded through --upstream (images over the chat API)."""
    from benchmarks.sidecar import start_sidecar
    from server.vision_model import ensure_vision_model

    work = tmp_path_factory.mktemp("vision-upstream")
    model = str(ensure_vision_model())
    vllm = VllmServer(model, kv_cache_gib=1, extra_args=("--trust-request-chat-template",),
                      log_path=work / "vllm.log").start()
    try:
        handle = start_sidecar(None, ["--upstream", vllm.url, "--prompt-style", "chat", "--max-tokens", "24"],
                               log_path=work / "sidecar.log")
        try:
            yield handle
        finally:
            assert handle.stop() == 0
    finally:
        vllm.stop()


def test_images_go_through_every_stage_on_the_upstream(vision_upstream_sidecar):
    from tests.integration.test_vision import png_image, shapes_png

    image = png_image(shapes_png("red", 3))
    resp = _guard(vision_upstream_sidecar.address, question="How many red squares are in the image?",
                  images=[image], sub_questions=["How many squares are red?", "How many squares are there?"],
                  num_paths=2, max_tokens=16, seed=3, scorer="trace", mode=pb.MODE_GUARD)
    assert resp.arm == pb.ARM_GUARD and len(resp.paths) == 2
    assert [r.sub_question for r in resp.sub_questions] == ["How many squares are red?", "How many squares are there?"]
    assert resp.decision in (pb.DECISION_ACCEPT, pb.DECISION_ABSTAIN)
    usage = {u.phase: u for u in resp.usage}
    # The image expands to many prompt tokens server-side, and the probes reuse the image prefix.
    assert usage["sample"].prompt_tokens > 60
    assert usage["probe"].cached_prompt_tokens > 0
    assert not resp.degraded_stages, resp.notes
