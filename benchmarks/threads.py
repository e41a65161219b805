"""Sampling and probing throughput of the in-process vLLM engine, for comparing CPU thread placements.

Run it once as is (the guard binds the model's threads to every CPU of a small machine:
guard/engine/cpu_threads.py) and once with vLLM's own placement, which keeps one CPU for its scheduler:

    python -m benchmarks.threads --model qwen2.5-coder-0.5b
    VLLM_CPU_OMP_THREADS_BIND=auto python -m benchmarks.threads --model qwen2.5-coder-0.5b

Both runs sample the same seeded paths (same token counts), so the times compare directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from guard.engine import Prompt, SampleSpec

QUESTION = ("Question: A shop sells 3 shirts for 8 dollars each and 2 hats for 5 dollars each. Jonas buys 4 "
            "shirts and 3 hats, then returns one hat. How many dollars does he spend?\nSolution:")


async def run(args) -> dict:
    from guard.engine.vllm_engine import VllmEngine
    from server.model_store import resolve_model_or_default

    engine = VllmEngine(resolve_model_or_default(args.model), max_model_len=2048)
    start = time.perf_counter()
    await engine.start()
    out: dict = {"bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
                 "start_s": round(time.perf_counter() - start, 1)}
    try:
        await engine.generate(Prompt(QUESTION), SampleSpec(n=1, max_tokens=8), "warm-up")
        for rep in range(args.repeats):
            spec = SampleSpec(n=args.paths, temperature=0.7, max_tokens=96, seed=rep, stop=("\n\n",))
            t = time.perf_counter()
            result = await engine.generate(Prompt(QUESTION), spec, f"sample-{rep}")
            seconds = time.perf_counter() - t
            tokens = sum(c.num_tokens for c in result.completions)
            out[f"sample_{rep}"] = {"s": round(seconds, 2), "tokens": tokens, "tok_per_s": round(tokens / seconds, 1)}
        probes = [Prompt(f"{QUESTION} Step {i}. " + "word " * (i % 7) + f"\nSub-question: How many for item {i}?"
                         "\nShort answer:") for i in range(args.probes)]
        t = time.perf_counter()
        await engine.generate_many(probes, SampleSpec(n=1, temperature=0.0, max_tokens=12), "probes")
        out["probes_s"] = round(time.perf_counter() - t, 2)
    finally:
        await engine.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered model name or model directory (default: the serve default)")
    p.add_argument("--paths", type=int, default=8)
    p.add_argument("--probes", type=int, default=24)
    p.add_argument("--repeats", type=int, default=2)
    print(json.dumps(asyncio.run(run(p.parse_args(argv)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
