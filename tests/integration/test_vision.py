"""Images end to end: a second real sidecar on the locally built plumbing VLM (random vision tower)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc
from tests.integration.conftest import REPO, Sidecar, running_sidecar

QUESTION = "How many red squares are in the image?"
SUB_QUESTIONS = ["How many squares are in the image?", "What colour are the squares?"]
# Image placeholder tokens one image expands to in the plumbing model (one 256 px tile).
IMAGE_TOKENS = 64


def shapes_png(color: str = "red", count: int = 3, size: tuple[int, int] = (256, 256), color_bg: str = "white",
               **save) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, color_bg)
    draw = ImageDraw.Draw(img)
    for i in range(count):
        x = 12 + 48 * (i % 5)
        y = 12 + 48 * (i // 5)
        draw.rectangle([x, y, x + 32, y + 32], fill=color)
    buf = io.BytesIO()
    img.save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def noise_png(seed: int = 1, side: int = 64) -> bytes:
    import random

    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3)).save(buf, format="PNG")
    return buf.getvalue()


def png_image(data: bytes) -> pb.Image:
    return pb.Image(data=data, mime_type="image/png")


@pytest.fixture(scope="module")
def vision_sidecar(tmp_path_factory):
    from server.vision_model import ensure_vision_model

    start = time.monotonic()
    model = str(ensure_vision_model())
    print(f"\nvision model ready in {time.monotonic() - start:.1f}s at {model}")
    # float32: on CPU vLLM's default (bf16) gives greedy outputs that depend on batch composition,
    # which would hide whether concurrent requests with different images stay apart.
    args = ["--max-tokens", "32", "--grace-seconds", "5", "--dtype", "float32"]
    with running_sidecar(tmp_path_factory.mktemp("vision-sidecar"), model, args,
                         env={"VLLM_CPU_KVCACHE_SPACE": "2"}, what="vision sidecar") as handle:
        yield handle


@pytest.fixture
def stub(vision_sidecar):
    with grpc.insecure_channel(vision_sidecar.address) as channel:
        yield guard_pb2_grpc.GuardServiceStub(channel)


def scrape(sidecar: Sidecar) -> dict[str, float]:
    text = urllib.request.urlopen(sidecar.metrics_url, timeout=10).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("trace_guard_")
    }


def usage_of(resp: pb.GuardResponse) -> dict[str, pb.PhaseUsage]:
    return {u.phase: u for u in resp.usage}


def test_get_info_says_the_model_accepts_images(stub, vision_sidecar):
    info = stub.GetInfo(pb.GetInfoRequest(), timeout=10)
    assert info.ready and info.accepts_images
    assert info.model == os.path.basename(vision_sidecar.model)
    assert info.limits.max_images >= 1


def test_image_request_is_fully_guarded_and_reuses_the_image_prefix(stub, vision_sidecar):
    before = scrape(vision_sidecar)
    resp = stub.Guard(
        pb.GuardRequest(
            question=QUESTION, images=[png_image(shapes_png("red", 3))], sub_questions=SUB_QUESTIONS,
            num_paths=4, max_tokens=32, temperature=1.0, seed=5, scorer="trace", score_mode="contested",
            return_paths_text=True,
        ),
        timeout=300,
    )
    after = scrape(vision_sidecar)
    assert resp.decision in (pb.DECISION_ACCEPT, pb.DECISION_ABSTAIN)
    assert resp.region != pb.REGION_UNSPECIFIED
    assert resp.scorer == "trace"
    assert len(resp.paths) == 4 and all(p.num_tokens > 0 for p in resp.paths)
    assert resp.ars_source == pb.ARS_SOURCE_REQUEST
    assert [row.sub_question for row in resp.sub_questions] == SUB_QUESTIONS
    assert all(len(row.path_answers) == 4 and 0.0 <= row.soft_agreement <= 1.0 for row in resp.sub_questions)
    assert not resp.degraded_stages, resp.notes

    usage = usage_of(resp)
    num_probes = 4 * len(SUB_QUESTIONS)
    # Every stage saw the image: its placeholder expanded to the image's tokens in each prompt.
    assert usage["sample"].prompt_tokens > IMAGE_TOKENS
    assert usage["probe"].prompt_tokens > num_probes * IMAGE_TOKENS
    # The probes reuse the cached prefix (system prompt, image, question, path) that sampling computed.
    assert usage["probe"].cached_prompt_tokens >= num_probes * IMAGE_TOKENS
    if "score" in usage and usage["score"].prompt_tokens:
        # Scorings carry the image too and are mostly served from the cache the probes filled.
        assert usage["score"].cached_prompt_tokens > usage["score"].prompt_tokens / 2
    # vLLM's own prefix-cache counters, exported by the sidecar, moved by at least that much.
    hits = after["trace_guard_engine_prefix_cache_hit_tokens_total"] - before.get(
        "trace_guard_engine_prefix_cache_hit_tokens_total", 0.0
    )
    queries = after["trace_guard_engine_prefix_cache_query_tokens_total"] - before.get(
        "trace_guard_engine_prefix_cache_query_tokens_total", 0.0
    )
    print(f"\nprefix cache over one image request: {hits:.0f} of {queries:.0f} prompt tokens hit; "
          f"usage: " + ", ".join(f"{u.phase}={u.prompt_tokens}p/{u.cached_prompt_tokens}c" for u in resp.usage))
    assert hits >= usage["probe"].cached_prompt_tokens
    assert queries >= hits > 0


def test_the_prefix_cache_tells_images_apart(stub):
    """Same image again: its prefix comes from the cache. Another image after the same text: nothing
    past the text before the image may be reused (vLLM hashes image content into the block hashes)."""
    def raw(data: bytes) -> pb.GuardResponse:
        return stub.Guard(
            pb.GuardRequest(question=QUESTION, images=[png_image(data)], mode=pb.MODE_RAW, max_tokens=2),
            timeout=120,
        )

    first = usage_of(raw(shapes_png("green", 2)))["sample"]
    again = usage_of(raw(shapes_png("green", 2)))["sample"]
    other = usage_of(raw(shapes_png("green", 4)))["sample"]
    assert again.cached_prompt_tokens >= IMAGE_TOKENS
    assert other.cached_prompt_tokens < again.cached_prompt_tokens
    # The image starts within the first 32-token block, so no block of the other prompt matches.
    assert other.cached_prompt_tokens == 0, (first, again, other)


def test_concurrent_requests_with_different_images_do_not_mix(stub):
    """Greedy answers about three images, sent alone and then interleaved in one batch, must be identical
    (text, and token log-probabilities up to float32 summation order: the sidecar runs float32, and the
    model's threads on every CPU of a small machine add partial sums in an order that depends on the
    batch, about 1e-6 relative; an image mixed up with another changes far more)."""
    images = {"shapes": shapes_png("red", 3), "noise": noise_png(), "black": shapes_png("red", 0, color_bg="black")}
    question = "What colour is the biggest shape in the image?"

    def ask(name: str) -> tuple[str, float]:
        resp = stub.Guard(
            pb.GuardRequest(question=question, images=[png_image(images[name])], mode=pb.MODE_RAW, temperature=0.0,
                            seed=11, max_tokens=24, return_paths_text=True),
            timeout=300,
        )
        # Raw confidence: the geometric-mean probability of the generated tokens.
        return resp.paths[0].text, resp.confidence

    alone = {name: ask(name) for name in images}
    assert len({text for text, _ in alone.values()}) == len(images), f"each image should steer the text: {alone}"
    order = ["shapes", "noise", "black", "black", "shapes", "noise"]
    with ThreadPoolExecutor(len(order)) as pool:
        together = list(pool.map(ask, order))
    for name, (text, confidence) in zip(order, together):
        assert text == alone[name][0]
        assert confidence == pytest.approx(alone[name][1], rel=1e-4)


def _too_many(limits) -> list[pb.Image]:
    return [png_image(shapes_png("red", 1, size=(8, 8)))] * (limits.max_images + 1)


def _too_many_pixels(limits) -> list[pb.Image]:
    side = int(limits.max_image_pixels**0.5) + 1
    return [png_image(shapes_png("red", 0, size=(side, side)))]


def _too_many_bytes(limits) -> list[pb.Image]:
    return [png_image(b"\x89PNG\r\n\x1a\n" + b"\0" * limits.max_image_bytes)]


def _corrupted(limits) -> list[pb.Image]:
    data = shapes_png("red", 2)
    return [png_image(shapes_png("red", 1)), png_image(data[: len(data) // 2] + b"\x00garbage")]


def _wrong_mime(limits) -> list[pb.Image]:
    return [pb.Image(data=shapes_png("red", 1), mime_type="image/jpeg")]


@pytest.mark.parametrize(
    "make_images, field, says",
    [
        (_corrupted, "images[1].data", "cannot be decoded"),
        (_too_many_pixels, "images[0].data", "pixels"),
        (_too_many_bytes, "images[0].data", "bytes"),
        (_too_many, "images", "limit"),
        (_wrong_mime, "images[0].mime_type", "PNG"),
    ],
    ids=["corrupted", "too-many-pixels", "too-many-bytes", "too-many-images", "wrong-mime-type"],
)
def test_bad_images_are_rejected_naming_the_field(stub, make_images, field, says):
    limits = stub.GetInfo(pb.GetInfoRequest(), timeout=10).limits
    with pytest.raises(grpc.RpcError) as err:
        stub.Guard(pb.GuardRequest(question=QUESTION, images=make_images(limits)), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":"), err.value.details()
    assert says in err.value.details()


@pytest.mark.parametrize(
    "data, mime",
    [
        (shapes_png("red", 1, size=(1, 1)), "image/png"),
        (shapes_png("red", 2, size=(1200, 9), format="JPEG", quality=80), "image/jpeg"),
        (shapes_png("red", 2, size=(40, 300), format="WEBP"), "image/webp"),
        (shapes_png("red", 2, size=(64, 64), format="GIF"), "image/gif"),
    ],
    ids=["1x1-png", "wide-jpeg", "tall-webp", "gif"],
)
def test_odd_but_valid_images_are_served(stub, data, mime):
    resp = stub.Guard(
        pb.GuardRequest(question=QUESTION, images=[pb.Image(data=data, mime_type=mime)], mode=pb.MODE_RAW, max_tokens=2),
        timeout=120,
    )
    assert resp.decision == pb.DECISION_RAW and resp.paths[0].num_tokens > 0
    assert usage_of(resp)["sample"].prompt_tokens > IMAGE_TOKENS


def test_cli_ask_with_an_image_runs_the_full_guard(vision_sidecar, tmp_path):
    image = tmp_path / "squares.png"
    image.write_bytes(shapes_png("red", 5))
    out = subprocess.run(
        [sys.executable, "-m", "server", "ask", QUESTION, "--image", str(image), "--address", vision_sidecar.address,
         "--paths", "3", "--max-tokens", "32", "--seed", "3"],
        check=False, capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    print("\n" + out.stdout)
    lines = out.stdout.splitlines()
    assert lines[0].split()[0] in ("ACCEPT", "ABSTAIN")
    assert f"model={os.path.basename(vision_sidecar.model)}" in out.stdout
    assert len(re.findall(r"^\s+\d+\s", out.stdout, flags=re.MULTILINE)) >= 3  # one row per path
    # The model decomposed the question itself, looking at the image: the ARS prompt carried it.
    tokens = dict(re.findall(r"(\w+)=(\d+)p/", next(line for line in lines if line.startswith("tokens:"))))
    assert int(tokens["ars"]) > IMAGE_TOKENS
    assert int(tokens["sample"]) > IMAGE_TOKENS
