"""What one decode step costs as the batch grows: the ceiling any sampler meets on this machine.

A guarded request decodes its N paths side by side, so at concurrency C the engine steps C x N
sequences where raw requests step C. Where a step's cost does not grow with the batch (memory-bound,
as on a GPU with a small model) the guard's extra paths are nearly free; where it grows in step with
the batch (compute-bound) they cost about N times. This measures step time against batch size on the
in-process vLLM engine, and from it the least latency ratio any path count could reach at
concurrency C, whatever the scheduler does:

    python -m benchmarks.steps --model qwen2.5-coder-0.5b --out benchmarks/out/steps-0.5b.json

Each batch size is timed at two output lengths with the same seeded prompt (the prompt is cached
after the first run, so the difference is decode only); the prompt counts upward, so paths rarely end
early, and the tokens each run really produced are reported beside the times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from guard.engine import Prompt, SampleSpec

PROMPT = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
DEFAULT_BATCHES = (1, 4, 8, 16, 32, 64, 128)


def step_seconds(short: tuple[float, float], long: tuple[float, float]) -> float:
    """Seconds per decode step from two runs of the same batch: (seconds, steps) each. The prefill and
    the fixed costs cancel in the difference."""
    (t1, s1), (t2, s2) = short, long
    if s2 <= s1:
        raise ValueError("the long run must take more steps than the short one")
    return (t2 - t1) / (s2 - s1)


def least_ratio(steps: dict[int, float], concurrency: int, paths: int) -> float | None:
    """Least guarded/raw latency ratio at `concurrency` with `paths` paths per guarded request, from
    measured step times (batch -> seconds): the same number of steps, each over paths x concurrency
    sequences instead of concurrency. None when either batch was not measured."""
    raw, guarded = steps.get(concurrency), steps.get(concurrency * paths)
    if raw is None or guarded is None:
        return None
    return guarded / raw


async def _timed(engine, batch: int, max_tokens: int, tag: str) -> tuple[float, float, float]:
    spec = SampleSpec(n=batch, temperature=0.7, max_tokens=max_tokens, seed=0)
    t = time.perf_counter()
    result = await engine.generate(Prompt(PROMPT), spec, tag)
    seconds = time.perf_counter() - t
    tokens = [c.num_tokens for c in result.completions]
    return seconds, max(tokens), sum(tokens) / len(tokens)


async def run(args) -> dict:
    from guard.engine.vllm_engine import VllmEngine
    from server.model_store import resolve_model_or_default

    engine = VllmEngine(resolve_model_or_default(args.model), max_model_len=1024,
                        max_num_seqs=max(args.batch))
    await engine.start()
    out: dict = {"model": args.model, "short_tokens": args.short, "long_tokens": args.long, "batches": {}}
    try:
        await engine.generate(Prompt(PROMPT), SampleSpec(n=1, max_tokens=4), "warm-up")
        for batch in args.batch:
            short = await _timed(engine, batch, args.short, f"short-{batch}")
            long = await _timed(engine, batch, args.long, f"long-{batch}")
            step = step_seconds((short[0], short[1]), (long[0], long[1]))
            out["batches"][batch] = {
                "step_s": round(step, 4), "tokens_per_s": round(batch / step, 1),
                "short_s": round(short[0], 2), "long_s": round(long[0], 2),
                "long_steps": long[1], "long_mean_tokens": round(long[2], 1),
            }
            print(f"batch {batch:4d}: {step * 1000:7.1f} ms/step  {batch / step:7.1f} tok/s  "
                  f"(long run {long[0]:.1f} s, mean {long[2]:.0f} of {args.long} tokens)", file=sys.stderr, flush=True)
    finally:
        await engine.shutdown()
    steps = {b: v["step_s"] for b, v in out["batches"].items()}
    out["least_ratio"] = {
        f"c{c}_n{n}": round(r, 2)
        for c in (1, 4, 16) for n in (2, 4, 8)
        if (r := least_ratio(steps, c, n)) is not None
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered model name or model directory (default: the serve default)")
    p.add_argument("--batch", type=int, action="append", help=f"batch sizes (default {DEFAULT_BATCHES})")
    p.add_argument("--short", type=int, default=8, help="output tokens of the short run")
    p.add_argument("--long", type=int, default=40, help="output tokens of the long run")
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    args = p.parse_args(argv)
    args.batch = sorted(set(args.batch or DEFAULT_BATCHES))
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
