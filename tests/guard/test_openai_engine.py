"""The upstream engine against fake vLLM OpenAI servers: request shapes, parsing, routing, failover,
abort and health. (The real server is exercised in tests/integration/test_upstream.py.)"""

import asyncio

import pytest

from guard.engine import Prompt, SampleSpec, ScoreItem
from guard.engine.openai_engine import OpenAIEngine
from guard.errors import EngineError, InvalidArgumentError
from server.model_store import ensure_default_model
from tests.fake_openai import FakeOpenAI


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    return str(ensure_default_model())


async def _engine(fakes, tokenizer_dir, **kw) -> OpenAIEngine:
    engine = OpenAIEngine([f.url for f in fakes], tokenizer=tokenizer_dir, health_interval_seconds=0.05,
                          startup_timeout_seconds=10, **kw)
    await engine.start()
    return engine


async def test_generate_parses_choices_logprobs_and_usage(tokenizer_dir):
    fake = await FakeOpenAI(model="/models/SmolLM2").start()
    engine = await _engine([fake], tokenizer_dir)
    try:
        assert engine.ready and engine.info().name == "SmolLM2" and engine.info().engine == "vllm-openai"
        result = await engine.generate(Prompt("Q: 7+5?\nA:"), SampleSpec(n=3, temperature=0.7, max_tokens=9,
                                                                      seed=4, stop=("\n",), logprobs=2), "r1")
        body = fake.requests[-1]
        assert body["prompt"] == ["Q: 7+5?\nA:"] and body["n"] == 3 and body["seed"] == 4
        assert body["add_special_tokens"] is False and body["stop"] == ["\n"] and body["logprobs"] == 2
        assert body["model"] == "/models/SmolLM2"
        assert [c.text for c in result.completions] == [" 12"] * 3
        c = result.completions[0]
        assert c.num_tokens == 2 and c.finish_reason == "stop" and c.token_logprobs == [-0.25, -0.5]
        assert c.top_logprobs == [[-0.25, -2.0], [-0.25, -2.0]]  # the k best of k+1
        assert (result.prompt_tokens, result.cached_prompt_tokens) == (10, 4)
        # Greedy with n>1: one choice decoded, repeated (vLLM refuses n>1 at temperature 0).
        greedy = await engine.generate(Prompt("x"), SampleSpec(n=4, temperature=0.0), "r2")
        assert fake.requests[-1]["n"] == 1 and len(greedy.completions) == 4
        # A JSON schema becomes vLLM's structured outputs.
        await engine.generate(Prompt("x"), SampleSpec(json_schema={"type": "object"}), "r3")
        assert fake.requests[-1]["structured_outputs"] == {"json": {"type": "object"}}
    finally:
        await engine.shutdown()
        await fake.stop()


async def test_generate_many_is_one_batched_call(tokenizer_dir):
    fake = await FakeOpenAI().start()
    engine = await _engine([fake], tokenizer_dir)
    try:
        before = len(fake.requests)
        results = await engine.generate_many([Prompt(f"p{i}") for i in range(6)], SampleSpec(n=2), "r")
        assert len(fake.requests) == before + 1
        assert fake.requests[-1]["prompt"] == [f"p{i}" for i in range(6)]
        assert [len(r.completions) for r in results] == [2] * 6
    finally:
        await engine.shutdown()
        await fake.stop()


async def test_score_sends_token_ids_and_sums_the_continuation(tokenizer_dir):
    fake = await FakeOpenAI().start()
    engine = await _engine([fake], tokenizer_dir)
    try:
        items = [ScoreItem(Prompt("The answer is"), " 12\n"), ScoreItem(Prompt("The answer is"), " 7")]
        results = await engine.score(items, "r")
        body = fake.requests[-1]
        assert body["prompt_logprobs"] == 0 and body["max_tokens"] == 1
        tok = engine._tokenizer
        for item, ids, res in zip(items, body["prompt"], results):
            ctx = tok.encode(item.context.text, add_special_tokens=False)
            cont = tok.encode(item.continuation, add_special_tokens=False)
            assert ids == ctx + cont
            assert res.num_tokens == len(cont) and res.logprob_sum == pytest.approx(-0.5 * len(cont))
    finally:
        await engine.shutdown()
        await fake.stop()


async def test_request_sticks_to_one_replica_and_fails_over(tokenizer_dir):
    a, b = await FakeOpenAI().start(), await FakeOpenAI().start()
    engine = await _engine([a, b], tokenizer_dir)
    try:
        # Affinity: every call of one request id lands on the same replica.
        for rid in (f"req-{i}" for i in range(20)):
            before = (len(a.requests), len(b.requests))
            await engine.generate(Prompt("x"), SampleSpec(), rid)
            await engine.generate_many([Prompt("y"), Prompt("z")], SampleSpec(), rid)
            await engine.score([ScoreItem(Prompt("ctx"), " 1")], rid)
            grew = (len(a.requests) - before[0], len(b.requests) - before[1])
            assert sorted(grew) == [0, 3]
        assert a.requests and b.requests  # both replicas get some requests
        # Replica a fails its calls: they fail over to b and count as errors. Its /health still answers, so
        # the 50 ms health loop may let it back in between calls; once /health fails too it stays out.
        a.status = 500
        for i in range(20):
            await engine.generate(Prompt("x"), SampleSpec(), f"req-{i}")
        a.healthy = False
        await asyncio.sleep(0.3)
        by_url = {r.url: r for r in engine.replicas()}
        assert not by_url[a.url].healthy and by_url[a.url].outcomes.get("error", 0) >= 1
        assert by_url[b.url].outcomes.get("failover", 0) >= 1
        await a.stop()
        for i in range(20):
            await engine.generate(Prompt("x"), SampleSpec(), f"req-{i}")
        await engine.check_health()  # b is still healthy
        await b.stop()
        with pytest.raises(EngineError) as err:
            await engine.generate(Prompt("x"), SampleSpec(), "req-0")
        assert err.value.retryable
        await asyncio.sleep(0.3)  # a health round
        with pytest.raises(EngineError):
            await engine.check_health()
    finally:
        await engine.shutdown()


async def test_health_loop_brings_a_replica_back(tokenizer_dir):
    fake = await FakeOpenAI().start()
    engine = await _engine([fake], tokenizer_dir)
    try:
        fake.healthy = False
        await asyncio.sleep(0.3)
        with pytest.raises(EngineError):
            await engine.check_health()
        assert engine.ready  # an upstream outage is not an engine to restart
        fake.healthy = True
        await asyncio.sleep(0.3)
        await engine.check_health()
    finally:
        await engine.shutdown()
        await fake.stop()


async def test_client_errors_map_to_typed_errors(tokenizer_dir):
    fake = await FakeOpenAI(status=400, error_body={"error": {
        "message": "This model's maximum context length is 2048 tokens", "param": "input_tokens"}}).start()
    engine = await _engine([fake], tokenizer_dir)
    try:
        with pytest.raises(InvalidArgumentError) as err:
            await engine.generate(Prompt("x"), SampleSpec(), "r")
        assert err.value.field == "question"
        fake.error_body = {"error": {"message": "bad stop"}}
        with pytest.raises(EngineError) as err2:
            await engine.generate(Prompt("x"), SampleSpec(), "r")
        assert not err2.value.retryable
        # A 4xx is the request's fault, not the replica's: it stays healthy.
        assert engine.replicas()[0].healthy
        with pytest.raises(InvalidArgumentError):
            await engine.generate(Prompt("x", images=("img",)), SampleSpec(), "r")
    finally:
        await engine.shutdown()
        await fake.stop()


async def test_abort_closes_the_upstream_request(tokenizer_dir):
    fake = await FakeOpenAI(hang=True).start()
    engine = await _engine([fake], tokenizer_dir)
    try:
        task = asyncio.create_task(engine.generate(Prompt("x"), SampleSpec(), "r-abort"))
        for _ in range(100):
            if fake.requests:
                break
            await asyncio.sleep(0.02)
        assert engine.num_running_requests() == 1
        await engine.abort("r-abort")
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.num_running_requests() == 0
        for _ in range(100):
            if fake.cancelled:
                break
            await asyncio.sleep(0.02)
        assert fake.cancelled == 1  # the server saw the client go away (vLLM aborts on that)
    finally:
        await engine.shutdown()
        await fake.stop()


async def test_start_fails_clearly_when_no_upstream_comes_up(tokenizer_dir):
    engine = OpenAIEngine(["http://127.0.0.1:9/v1"], tokenizer=tokenizer_dir, startup_timeout_seconds=0.5)
    with pytest.raises(EngineError, match="no upstream became healthy"):
        await engine.start()
    assert not engine.ready
