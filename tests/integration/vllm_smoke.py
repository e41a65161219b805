"""Smoke run of VllmEngine on a real local model (standalone script, not collected by pytest).

Usage:
    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=4 python tests/integration/vllm_smoke.py [MODEL_DIR]

Everything lives under `if __name__ == "__main__":` because vLLM starts its engine core with
the `spawn` method, which re-imports this module in the child process. Exit status 0 = all
checks passed. Set VLLM_LOGGING_LEVEL=WARNING to quieten vLLM.
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

    default_model = repo_root / "models" / "SmolLM2-135M-Instruct"
    model_dir = sys.argv[1] if len(sys.argv) > 1 else str(default_model)
    timings: dict[str, float] = {}
    failures: list[str] = []

    def check(cond: bool, what: str) -> None:
        if cond:
            log.info("ok: %s", what)
        else:
            log.error("FAIL: %s", what)
            failures.append(what)

    # Long enough (>2 KV blocks of 128 tokens, the CPU backend's block size) for prefix caching.
    FEW_SHOT = (
        "Question: Sara has 3 pens and gets 4 more. How many pens does she have?\n"
        "Solution: Sara starts with 3 pens. She gets 4 more, so 3 + 4 = 7. The answer is 7.\n\n"
        "Question: A box holds 10 eggs and 6 break. How many are left?\n"
        "Solution: The box starts with 10 eggs. 6 break, so 10 - 6 = 4. The answer is 4.\n\n"
        "Question: Ben reads 12 pages on Monday and 9 pages on Tuesday. How many pages did he read?\n"
        "Solution: Ben reads 12 pages and then 9 pages, so 12 + 9 = 21. The answer is 21.\n\n"
        "Question: A class has 30 students and 13 are absent. How many are present?\n"
        "Solution: There are 30 students and 13 are absent, so 30 - 13 = 17. The answer is 17.\n\n"
        "Question: Mia has 4 bags with 5 marbles each. How many marbles does she have?\n"
        "Solution: Mia has 4 bags of 5 marbles, so 4 * 5 = 20. The answer is 20.\n\n"
        "Question: A baker makes 24 rolls and sells 15. How many rolls are left?\n"
        "Solution: The baker makes 24 rolls and sells 15, so 24 - 15 = 9. The answer is 9.\n\n"
        "Question: Tom has 7 apples and buys 5 more. How many apples does he have?\n"
        "Solution:"
    )
    SCHEMA = {
        "type": "object",
        "properties": {
            "sub_questions": {
                "type": "array",
                # maxLength keeps a rambling small model from running out of tokens mid-string.
                "items": {"type": "string", "maxLength": 120},
                "minItems": 1,
                "maxItems": 4,
            }
        },
        "required": ["sub_questions"],
    }

    def hf_logprob(context: str, continuation: str) -> float:
        """Reference log P(continuation | context) from transformers in float32."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        ctx = tok.encode(context, add_special_tokens=False)
        cont = tok.encode(continuation, add_special_tokens=False)
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        lps = torch.log_softmax(logits, dim=-1)
        return float(sum(lps[len(ctx) + i - 1, t] for i, t in enumerate(cont)))

    async def timed(name: str, aw):
        t0 = time.perf_counter()
        out = await aw
        timings[name] = time.perf_counter() - t0
        return out

    async def idle(engine: VllmEngine) -> bool:
        # Our bookkeeping and vLLM's own output processor must both be empty.
        return engine.num_running_requests() == 0 and engine._llm.get_num_unfinished_requests() == 0

    async def check_start(engine: VllmEngine) -> None:
        # The loop must stay responsive while the engine loads: count ticks of a heartbeat.
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.1)
                ticks += 1

        hb = asyncio.create_task(heartbeat())
        await timed("start", engine.start())
        await engine.start()  # idempotent
        hb.cancel()
        expected = timings["start"] / 0.1
        check(ticks >= 0.5 * expected, f"event loop not blocked during start ({ticks}/~{expected:.0f} ticks)")
        check(engine.ready, "ready after start")
        await engine.check_health()
        info = engine.info()
        log.info("info: %s", info)
        check(info.engine == "vllm-inprocess" and info.name == Path(model_dir).name, "info names")

        chat = engine.render_chat(
            [
                {"role": "system", "content": "You are terse."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "you"}],
                },
            ]
        )
        log.info("render_chat: %r", chat)
        check(
            "<|im_start|>user\nHi\nyou<|im_end|>" in chat and chat.endswith("<|im_start|>assistant\n"),
            "render_chat applies the ChatML template to list-of-parts content",
        )

    async def check_sampling(engine: VllmEngine) -> None:
        spec = SampleSpec(
            n=8, temperature=0.8, top_p=0.95, max_tokens=48, seed=1234, logprobs=5, stop=("\n\n",)
        )
        # The first request using top-p / seeds / top-k logprobs pays a one-off warm-up.
        warm = Prompt("Question: What is 1 plus 1?\nSolution:")
        await timed("generate_n8_48tok_cold", engine.generate(warm, spec, "smoke-warmup"))
        res = await timed("generate_n8_48tok", engine.generate(Prompt(FEW_SHOT), spec, "smoke-n8"))
        timings["generate_n8_tok_per_s"] = res.generated_tokens / timings["generate_n8_48tok"]
        for i, c in enumerate(res.completions):
            log.info("  [%d] %r (%d tok, %s)", i, c.text, c.num_tokens, c.finish_reason)
        log.info(
            "n=8: prompt_tokens=%d cached_prompt_tokens=%d generated=%d",
            res.prompt_tokens,
            res.cached_prompt_tokens,
            res.generated_tokens,
        )
        comps = res.completions
        check(len(comps) == 8, "n=8 completions")
        check(res.prompt_tokens > 256, "few-shot prompt spans >2 KV blocks")
        check(all(len(c.token_logprobs) == c.num_tokens for c in comps), "one logprob per generated token")
        check(
            all(len(c.top_logprobs) == c.num_tokens for c in comps)
            and all(len(t) == 5 for c in comps for t in c.top_logprobs),
            "top-5 logprobs per position",
        )
        check(
            all(lp <= 0.0 and not math.isnan(lp) for c in comps for lp in c.token_logprobs),
            "logprobs are valid",
        )
        check(all(t == sorted(t, reverse=True) for c in comps for t in c.top_logprobs), "top logprobs sorted")
        check(
            all(c.token_logprobs[i] <= t[0] + 1e-4 for c in comps for i, t in enumerate(c.top_logprobs)),
            "chosen token never beats the top-1 alternative",
        )
        check(len({c.text for c in comps}) > 1, "samples differ")

        # Same prompt again: its full KV blocks now come from the prefix cache.
        res2 = await engine.generate(Prompt(FEW_SHOT), SampleSpec(max_tokens=8), "smoke-again")
        log.info("repeat: prompt_tokens=%d cached=%d", res2.prompt_tokens, res2.cached_prompt_tokens)
        check(res2.cached_prompt_tokens >= 256, "prefix cache hit on repeated prompt")

        questions = [f"Question: What is {a} plus {a + 1}?\nAnswer:" for a in range(16)]
        greedy = SampleSpec(n=1, temperature=0.0, max_tokens=16, stop=("\n",))
        prompts = [Prompt(q) for q in questions]
        many = await timed("generate_many_16x16tok", engine.generate_many(prompts, greedy, "smoke-many"))
        check(len(many) == 16 and all(len(r.completions) == 1 for r in many), "generate_many: 16 results")
        for q, r in list(zip(questions, many))[:4]:
            log.info("  %r -> %r", q.splitlines()[0], r.completions[0].text)
        single = await engine.generate(Prompt(questions[5]), greedy, "smoke-one")
        check(single.completions[0].text == many[5].completions[0].text, "generate_many keeps input order")

    async def check_score(engine: VllmEngine) -> None:
        items = [
            ScoreItem(Prompt("The capital of France is"), " Paris"),
            ScoreItem(Prompt("The capital of France is"), " banana"),
            ScoreItem(Prompt("The opposite of hot is"), " cold"),
            ScoreItem(Prompt("The opposite of hot is"), " purple"),
        ]
        scores = await timed("score_4_items", engine.score(items, "smoke-score"))
        for it, s in zip(items, scores):
            log.info(
                "  log P(%r | %r) = %.3f over %d tok (prompt %d)",
                it.continuation,
                it.context.text,
                s.logprob_sum,
                s.num_tokens,
                s.prompt_tokens,
            )
        check(scores[0].logprob_sum > scores[1].logprob_sum, "Paris beats banana")
        check(scores[2].logprob_sum > scores[3].logprob_sum, "cold beats purple")
        check(all(s.logprob_sum < 0 and s.num_tokens == 1 for s in scores), "single-token log-probabilities")

        # Multi-token continuation against a float32 transformers reference (vLLM runs bf16 on CPU):
        # an off-by-one in the position bookkeeping would be off by whole nats.
        ctx, cont = "The capital of France is", " Paris, and the capital of Italy is Rome."
        (multi,) = await engine.score([ScoreItem(Prompt(ctx), cont)], "smoke-score2")
        ref = await asyncio.to_thread(hf_logprob, ctx, cont)
        log.info("multi-token: vllm=%.3f hf=%.3f over %d tok", multi.logprob_sum, ref, multi.num_tokens)
        check(multi.num_tokens > 5, "multi-token continuation")
        tolerance = max(0.3, 0.1 * abs(ref))
        check(abs(multi.logprob_sum - ref) < tolerance, "score matches the transformers reference")

    async def check_json(engine: VllmEngine) -> None:
        question = "Tom has 7 apples and buys 5 more. How many apples does he have?"
        ask = f"Split into sub-questions as JSON: {question}"
        prompt = engine.render_chat([{"role": "user", "content": ask}])
        spec = SampleSpec(n=2, temperature=0.7, max_tokens=256, seed=7, json_schema=SCHEMA)
        res = await timed("json_schema_n2_256tok", engine.generate(Prompt(prompt), spec, "smoke-json"))
        for c in res.completions:
            log.info("  json: %r (%s)", c.text, c.finish_reason)
            try:
                subs = json.loads(c.text).get("sub_questions")
            except json.JSONDecodeError as exc:
                check(False, f"json parses ({exc}; finish_reason={c.finish_reason})")
                continue
            check(isinstance(subs, list) and 1 <= len(subs) <= 4, "json parses and matches the schema")

    async def check_cancel_abort(engine: VllmEngine) -> None:
        story = "Write a very long, detailed story about a dragon who learns to bake bread. Many chapters."
        long_prompt = Prompt(engine.render_chat([{"role": "user", "content": story}]))
        long_spec = SampleSpec(n=1, temperature=1.0, max_tokens=512, seed=3)

        # Cancelling the awaiting task mid-generation.
        task = asyncio.create_task(engine.generate(long_prompt, long_spec, "smoke-cancel"))
        await asyncio.sleep(0.5)
        check(not task.done(), "512-token generation still running after 0.5 s")
        check(engine.num_running_requests() == 1, "one engine request in flight before cancel")
        t0 = time.perf_counter()
        task.cancel()
        try:
            await task
            check(False, "cancelled task raises CancelledError")
        except asyncio.CancelledError:
            check(True, "cancelled task raises CancelledError")
        timings["cancel_to_raise"] = time.perf_counter() - t0
        await asyncio.sleep(0.2)
        check(await idle(engine), "num_running_requests()==0 and vLLM has nothing unfinished after cancel")
        short = Prompt("Question: What is 2 plus 2?\nAnswer:")
        after = await timed(
            "generate_after_cancel_8tok", engine.generate(short, SampleSpec(max_tokens=8), "x")
        )
        check(after.completions[0].num_tokens > 0, "engine serves a request after cancel")
        # The scheduler's own counts after the last engine step: had the engine core kept the
        # cancelled request, it would still be running there.
        running = engine._stats.scheduler_running + engine._stats.scheduler_waiting
        check(running == 0, f"engine core dropped the cancelled request (running+waiting={running})")

        # abort(request_id) of an n=4 request: all children end with finish_reason "abort".
        spec4 = SampleSpec(n=4, temperature=1.0, max_tokens=512, seed=5)
        task = asyncio.create_task(engine.generate(long_prompt, spec4, "smoke-abort"))
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        await engine.abort("smoke-abort")
        res = await asyncio.wait_for(task, timeout=10)
        timings["abort_to_result"] = time.perf_counter() - t0
        log.info("abort: finish=%s tokens=%s", [c.finish_reason for c in res.completions],
                 [c.num_tokens for c in res.completions])
        check(all(c.finish_reason == "abort" for c in res.completions), "abort() ends all n=4 children")
        check(await idle(engine), "nothing left running after abort")

        # abort() landing while the prompt is still being tokenized (before submission).
        task = asyncio.create_task(engine.generate(long_prompt, long_spec, "smoke-abort-early"))
        await asyncio.sleep(0)
        await engine.abort("smoke-abort-early")
        early = await asyncio.wait_for(task, timeout=10)
        check(early.completions[0].finish_reason == "abort", "abort before submission is honoured")
        check(await idle(engine), "nothing left running after early abort")

        # Cancelling a generate_many cancels every engine request it made.
        task = asyncio.create_task(engine.generate_many([long_prompt] * 3, long_spec, "smoke-cancel-many"))
        await asyncio.sleep(0.5)
        check(engine.num_running_requests() == 3, "3 engine requests in flight for generate_many")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.2)
        check(await idle(engine), "nothing left running after cancelling generate_many")

    async def check_errors(engine: VllmEngine) -> None:
        try:
            await engine.generate(Prompt("x " * 5000), SampleSpec(max_tokens=4), "smoke-too-long")
            check(False, "over-long prompt raises EngineError")
        except EngineError as exc:
            check(not exc.retryable, f"over-long prompt raises a non-retryable EngineError: {exc}")
        await engine.check_health()
        check(engine.ready, "still ready after a rejected request")

    async def main() -> None:
        engine = VllmEngine(model_dir, max_model_len=2048, enforce_eager=True, max_num_seqs=32)
        late = None
        try:
            await check_start(engine)
            await check_sampling(engine)
            await check_score(engine)
            await check_json(engine)
            await check_cancel_abort(engine)
            await check_errors(engine)
            # Shutting down with a request in flight ends it with "abort" rather than hanging.
            story = Prompt("Once upon a time, in a land far away,")
            late_spec = SampleSpec(max_tokens=512, temperature=1.0)
            late = asyncio.create_task(engine.generate(story, late_spec, "late"))
            await asyncio.sleep(0.3)
            stats = engine.prefix_cache_stats()
            log.info("prefix cache stats: %s", stats)
            check(stats is not None and stats["queries"] > 0 and stats["hits"] > 0, "prefix cache counters")
        finally:
            await timed("shutdown", engine.shutdown())
        check(not engine.ready, "not ready after shutdown")
        if late is not None:
            late_res = await asyncio.wait_for(late, timeout=5)
            check(late_res.completions[0].finish_reason == "abort", "in-flight request aborted by shutdown")

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
