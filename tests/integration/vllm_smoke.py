"""Smoke run of VllmEngine on a real local model (standalone script, not collected by pytest).

Usage:
    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=4 python tests/integration/vllm_smoke.py [MODEL_DIR]

Everything lives under `if __name__ == "__main__":` because vLLM starts its engine core with
the `spawn` method, which re-imports this module in the child process.
"""

if __name__ == "__main__":
    import asyncio
    import json
    import logging
    import math
    import os
    import sys
    import time
    from pathlib import Path

    repo_root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo_root))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")

    from guard.engine.base import Prompt, SampleSpec, ScoreItem
    from guard.engine.vllm_engine import VllmEngine
    from guard.errors import EngineError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("vllm_smoke")

    model_dir = sys.argv[1] if len(sys.argv) > 1 else str(repo_root / "models" / "SmolLM2-135M-Instruct")
    timings: dict[str, float] = {}
    failures: list[str] = []

    def check(cond: bool, what: str) -> None:
        if cond:
            log.info("ok: %s", what)
        else:
            log.error("FAIL: %s", what)
            failures.append(what)

    FEW_SHOT = (
        "Question: Sara has 3 pens and gets 4 more. How many pens does she have?\n"
        "Solution: 3 + 4 = 7. The answer is 7.\n\n"
        "Question: A box holds 10 eggs and 6 break. How many are left?\n"
        "Solution: 10 - 6 = 4. The answer is 4.\n\n"
        "Question: Tom has 7 apples and buys 5 more. How many apples does he have?\n"
        "Solution:"
    )

    async def main() -> None:
        engine = VllmEngine(model_dir, max_model_len=2048, enforce_eager=True, max_num_seqs=32)

        t0 = time.perf_counter()
        # The loop must stay responsive while the engine loads: count ticks of a heartbeat.
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.1)
                ticks += 1

        hb = asyncio.create_task(heartbeat())
        await engine.start()
        await engine.start()  # idempotent
        timings["start"] = time.perf_counter() - t0
        hb.cancel()
        expected_ticks = timings["start"] / 0.1
        check(ticks >= 0.5 * expected_ticks, f"event loop not blocked during start ({ticks} ticks of ~{expected_ticks:.0f})")
        check(engine.ready, "ready after start")
        await engine.check_health()
        info = engine.info()
        log.info("info: %s", info)
        check(info.engine == "vllm-inprocess" and info.name == Path(model_dir).name, "info names")

        # -- render_chat (string content and list-of-parts content)
        chat = engine.render_chat(
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            ]
        )
        log.info("render_chat: %r", chat)
        check("<|im_start|>user" in chat and chat.rstrip().endswith("<|im_start|>assistant"), "render_chat ChatML")

        # -- n=8 sampling with logprobs
        spec = SampleSpec(n=8, temperature=0.8, top_p=0.95, max_tokens=48, seed=1234, logprobs=5, stop=("\n\n",))
        t0 = time.perf_counter()
        res = await engine.generate(Prompt(FEW_SHOT), spec, "smoke-n8")
        timings["generate_n8_48tok"] = time.perf_counter() - t0
        check(len(res.completions) == 8, "n=8 completions")
        for i, c in enumerate(res.completions):
            log.info("  [%d] %r (%d tok, %s)", i, c.text, c.num_tokens, c.finish_reason)
        check(all(len(c.token_logprobs) == c.num_tokens for c in res.completions), "one logprob per generated token")
        check(
            all(len(c.top_logprobs) == c.num_tokens and all(len(t) == 5 for t in c.top_logprobs) for c in res.completions),
            "top-5 logprobs per position",
        )
        check(
            all(all(lp <= 0.0 and not math.isnan(lp) for lp in c.token_logprobs) for c in res.completions),
            "logprobs are valid",
        )
        check(
            all(all(t == sorted(t, reverse=True) for t in c.top_logprobs) for c in res.completions),
            "top logprobs sorted",
        )
        check(len({c.text for c in res.completions}) > 1, "samples differ")
        log.info("prompt_tokens=%d cached_prompt_tokens=%d generated=%d",
                 res.prompt_tokens, res.cached_prompt_tokens, res.generated_tokens)
        timings["generate_n8_tok_per_s"] = res.generated_tokens / timings["generate_n8_48tok"]

        # same prompt again: the prompt prefix should now come from the prefix cache
        res2 = await engine.generate(Prompt(FEW_SHOT), SampleSpec(n=1, max_tokens=8), "smoke-again")
        log.info("repeat: prompt_tokens=%d cached_prompt_tokens=%d", res2.prompt_tokens, res2.cached_prompt_tokens)
        check(res2.cached_prompt_tokens > 0, "prefix cache hit on repeated prompt")

        # -- generate_many: 16 short greedy prompts
        questions = [f"Question: What is {a} plus {a + 1}?\nAnswer:" for a in range(16)]
        t0 = time.perf_counter()
        many = await engine.generate_many(
            [Prompt(q) for q in questions], SampleSpec(n=1, temperature=0.0, max_tokens=16, stop=("\n",)), "smoke-many"
        )
        timings["generate_many_16x16tok"] = time.perf_counter() - t0
        check(len(many) == 16 and all(len(r.completions) == 1 for r in many), "generate_many: 16 results")
        for q, r in list(zip(questions, many))[:4]:
            log.info("  %r -> %r", q.splitlines()[0], r.completions[0].text)
        single = await engine.generate(Prompt(questions[5]), SampleSpec(n=1, temperature=0.0, max_tokens=16, stop=("\n",)), "smoke-one")
        check(single.completions[0].text == many[5].completions[0].text, "generate_many keeps input order (greedy match)")

        # -- score
        items = [
            ScoreItem(Prompt("The capital of France is"), " Paris"),
            ScoreItem(Prompt("The capital of France is"), " banana"),
            ScoreItem(Prompt("The opposite of hot is"), " cold"),
            ScoreItem(Prompt("The opposite of hot is"), " purple"),
        ]
        t0 = time.perf_counter()
        scores = await engine.score(items, "smoke-score")
        timings["score_4_items"] = time.perf_counter() - t0
        for it, s in zip(items, scores):
            log.info("  log P(%r | %r) = %.3f over %d tok (prompt %d)", it.continuation, it.context.text,
                     s.logprob_sum, s.num_tokens, s.prompt_tokens)
        check(scores[0].logprob_sum > scores[1].logprob_sum, "Paris beats banana")
        check(scores[2].logprob_sum > scores[3].logprob_sum, "cold beats purple")
        check(all(s.logprob_sum < 0 for s in scores), "scores are log-probabilities")
        # A multi-token continuation equals the sum of step-wise teacher-forced scores.
        multi = await engine.score([ScoreItem(Prompt("The capital of France is"), " Paris, and the capital of Italy is Rome")], "smoke-score2")
        check(multi[0].num_tokens > 3 and multi[0].logprob_sum < scores[0].logprob_sum, "multi-token continuation scored")

        # -- JSON-schema constrained generation
        schema = {
            "type": "object",
            "properties": {
                "sub_questions": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4}
            },
            "required": ["sub_questions"],
        }
        jprompt = engine.render_chat(
            [{"role": "user", "content": "Split into sub-questions as JSON: Tom has 7 apples and buys 5 more. How many apples does he have?"}]
        )
        t0 = time.perf_counter()
        jres = await engine.generate(Prompt(jprompt), SampleSpec(n=2, temperature=0.7, max_tokens=160, seed=7, json_schema=schema), "smoke-json")
        timings["json_schema_n2_160tok"] = time.perf_counter() - t0
        for c in jres.completions:
            log.info("  json: %r (%s)", c.text, c.finish_reason)
            try:
                obj = json.loads(c.text)
                check(isinstance(obj.get("sub_questions"), list) and 1 <= len(obj["sub_questions"]) <= 4, "json matches schema")
            except json.JSONDecodeError as exc:
                check(False, f"json parses ({exc}; finish_reason={c.finish_reason})")

        # -- cancellation of the awaiting task mid-generation
        long_prompt = engine.render_chat([{"role": "user", "content": "Write a very long, detailed story about a dragon who learns to bake bread. Use many chapters."}])
        long_spec = SampleSpec(n=1, temperature=1.0, max_tokens=512, seed=3)
        t0 = time.perf_counter()
        task = asyncio.create_task(engine.generate(Prompt(long_prompt), long_spec, "smoke-cancel"))
        await asyncio.sleep(0.5)
        check(not task.done(), "long generation still running after 0.5 s")
        check(engine.num_running_requests() == 1, "one request in flight before cancel")
        task.cancel()
        try:
            await task
            check(False, "cancelled task raised CancelledError")
        except asyncio.CancelledError:
            check(True, "cancelled task raised CancelledError")
        await asyncio.sleep(0.2)
        timings["cancel_to_idle"] = time.perf_counter() - t0 - 0.5
        check(engine.num_running_requests() == 0, "num_running_requests()==0 after cancel")
        check(engine._llm.get_num_unfinished_requests() == 0, "vLLM output processor has no unfinished requests")
        t0 = time.perf_counter()
        after = await engine.generate(Prompt("Question: What is 2 plus 2?\nAnswer:"), SampleSpec(max_tokens=8), "smoke-after-cancel")
        timings["generate_after_cancel_8tok"] = time.perf_counter() - t0
        check(after.completions[0].num_tokens > 0, "engine serves a request after cancel")
        check(engine._stats.scheduler_running + engine._stats.scheduler_waiting <= 1,
              f"engine core dropped the cancelled request (running={engine._stats.scheduler_running})")

        # -- explicit abort(request_id) of an n=4 request
        t0 = time.perf_counter()
        task = asyncio.create_task(engine.generate(Prompt(long_prompt), SampleSpec(n=4, temperature=1.0, max_tokens=512, seed=5), "smoke-abort"))
        await asyncio.sleep(0.5)
        await engine.abort("smoke-abort")
        ares = await asyncio.wait_for(task, timeout=10)
        timings["abort_to_result"] = time.perf_counter() - t0 - 0.5
        log.info("abort: finish_reasons=%s tokens=%s", [c.finish_reason for c in ares.completions],
                 [c.num_tokens for c in ares.completions])
        check(all(c.finish_reason == "abort" for c in ares.completions), "abort() ends all n=4 children with finish_reason=abort")
        check(engine.num_running_requests() == 0, "num_running_requests()==0 after abort")

        # -- cancel a generate_many: all of its engine requests go away
        task = asyncio.create_task(engine.generate_many([Prompt(long_prompt)] * 3, long_spec, "smoke-cancel-many"))
        await asyncio.sleep(0.5)
        check(engine.num_running_requests() == 3, "3 engine requests in flight for generate_many")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.2)
        check(engine.num_running_requests() == 0 and engine._llm.get_num_unfinished_requests() == 0,
              "nothing left running after cancelling generate_many")

        # -- an engine-side validation failure maps to EngineError
        try:
            await engine.generate(Prompt("x " * 5000), SampleSpec(max_tokens=4), "smoke-too-long")
            check(False, "over-long prompt raises EngineError")
        except EngineError as exc:
            check(not exc.retryable, f"over-long prompt raises non-retryable EngineError: {exc}")
        await engine.check_health()

        stats = engine.prefix_cache_stats()
        log.info("prefix cache stats: %s", stats)
        check(stats is not None and stats["queries"] > 0 and stats["hits"] > 0, "prefix cache counters")

        t0 = time.perf_counter()
        await engine.shutdown()
        timings["shutdown"] = time.perf_counter() - t0
        check(not engine.ready, "not ready after shutdown")

    asyncio.run(main())
    print("\nTIMINGS (s):")
    for k, v in timings.items():
        print(f"  {k:32s} {v:8.3f}")
    if failures:
        print(f"\nFAILED ({len(failures)}):")
        for f in failures:
            print("  -", f)
        sys.exit(1)
    print("\nALL CHECKS PASSED")
