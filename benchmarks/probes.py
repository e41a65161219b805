"""Probe variants on the same sampled paths: cost (probe time / sample time, prefix-cache share, cut probes)
and what the probes read (gold intermediate values, echoes of the final answer, first failure step).

Each problem is sampled once (N paths, at concurrency 1); every variant (probe format, how the answer
is read, probe token limit) then probes those same paths with the gold sub-questions, so differences
between variants come from the probes alone. Variants run in a rotating order per problem, so none
always goes first after sampling.

    python -m benchmarks.probes --data gsm8k --data words --limit 30 --model qwen2.5-coder-0.5b \\
        --variant legacy:greedy:12 --variant continue:greedy:12 --variant continue:values:12

A variant ending in `:all` sends every probe of the N x K grid (as before equal probes were shared and
restated questions skipped), for comparison. A limit of 1 token (`continue:greedy:1`) times the probes'
prefill alone: the floor no answer format can go under.

Before each variant the engine's prefix cache is emptied and the sampled paths prefilled again, so every
variant meets the cache as serving leaves it after sampling (otherwise a variant would find the probe
prompts an earlier variant cached, and look cheaper than it is). The legacy format's probes bring a
few-shot header of their own, which serving keeps cached across requests but which the reset drops:
legacy variants pay that header's prefill once per problem here, so compare them with care.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import datasets
from benchmarks.quality import gold_ars
from guard.answers import answers_equivalent, normalize_answer
from guard.budget import Budget, StageCostModel
from guard.engine import Prompt, SampleSpec
from guard.params import GuardParams
from guard.pipeline import GuardConfig, GuardPipeline
from guard.probe import ProbeRead
from guard.prompts import ProbeFormat, PromptBuilder
from guard.refine import ConsistencyStage
from guard.result import PhaseUsage
from guard.stages import Stage, StageClock


@dataclass(frozen=True)
class Variant:
    probe_format: ProbeFormat
    probe_read: ProbeRead
    max_tokens: int
    # False (suffix ":all"): every one of the N x K probes is sent, as before equal probes were shared
    # and restated questions skipped.
    share: bool = True

    @classmethod
    def parse(cls, spec: str) -> Variant:
        fmt, read, limit, *rest = spec.split(":")
        if rest not in ([], ["all"]):
            raise ValueError(f"variant {spec!r}: FORMAT:READ:MAX_TOKENS[:all]")
        return cls(ProbeFormat(fmt), ProbeRead(read), int(limit), not rest)

    @property
    def name(self) -> str:
        return f"{self.probe_format.value}:{self.probe_read.value}:{self.max_tokens}" + ("" if self.share else ":all")


@dataclass
class Tally:
    ratios: list[float] = field(default_factory=list)
    probe_ms: list[float] = field(default_factory=list)
    # Teacher-forced scoring after the probes (trace's contested sub-questions), over the sample time.
    score_ratios: list[float] = field(default_factory=list)
    usage: PhaseUsage = field(default_factory=PhaseUsage)
    # Probes of the N x K grid, and the probe requests the engine got for them.
    probes: int = 0
    sent: int = 0
    asked: int = 0
    hits: int = 0
    echoes: int = 0
    ffs_match: int = 0
    ffs_total: int = 0
    # Paths probed, and those whose final answer is right (the same for every variant: paths are shared).
    paths: int = 0
    right_paths: int = 0

    def summary(self) -> dict:
        def share(a: int, b: int) -> float:
            return a / b if b else float("nan")

        return {
            "problems": len(self.ratios),
            "probe_over_sample_p50": statistics.median(self.ratios) if self.ratios else float("nan"),
            "probe_ms_p50": statistics.median(self.probe_ms) if self.probe_ms else float("nan"),
            "score_over_sample_p50": statistics.median(self.score_ratios) if self.score_ratios else float("nan"),
            "probe_prompt_cached_share": share(self.usage.cached_prompt_tokens, self.usage.prompt_tokens),
            "probes_cut_share": share(self.usage.truncated, self.sent),
            "probes_sent_share": share(self.sent, self.probes),
            "intermediate_probes_on_right_paths": self.asked,
            "probe_accuracy": share(self.hits, self.asked),
            "probe_echo_rate": share(self.echoes, self.asked),
            "ffs_wrong_paths": self.ffs_total,
            "ffs_match_rate": share(self.ffs_match, self.ffs_total),
            "paths_right_share": share(self.right_paths, self.paths),
        }


def tally_gold(tally: Tally, problem, gold_values, paths, analysis) -> None:
    """Gold-step checks of one problem's probes: on right paths, intermediate sub-questions (gold value not
    the final answer) read right / read as the path's own final answer; on wrong paths, FFS = the first
    sub-question the path got wrong."""
    gold_final = normalize_answer(problem.answer)
    golds = [normalize_answer(v) for v in gold_values]
    for i, path in enumerate(paths):
        right = path.answer is not None and gold_final is not None and answers_equivalent(path.answer, gold_final)
        tally.paths += 1
        tally.right_paths += right
        # A sub-question not asked (it restates the question) is answered by the path's final answer.
        asked = getattr(analysis, "asked", None) or [True] * len(analysis.path_answers)
        got = [(normalize_answer(row[i]) if row[i] else None) if asked[k] else path.answer
               for k, row in enumerate(analysis.path_answers)]
        if right:
            for k, gold in enumerate(golds):
                if gold is None or answers_equivalent(gold, gold_final):
                    continue
                tally.asked += 1
                tally.hits += got[k] is not None and answers_equivalent(got[k], gold)
                tally.echoes += got[k] is not None and answers_equivalent(got[k], path.answer)
            continue
        first_wrong = next((k + 1 for k, gold in enumerate(golds)
                            if gold is None or got[k] is None or not answers_equivalent(got[k], gold)), None)
        if first_wrong is not None:
            tally.ffs_total += 1
            tally.ffs_match += analysis.first_failure_step[i] == first_wrong


async def warm_as_served(engine, as_sampled: list[Prompt], request_id: str) -> None:
    """The prefix cache as sampling leaves it: emptied, then each path (its prompt and text) prefilled."""
    if not await engine.reset_prefix_cache():
        raise RuntimeError("vLLM did not reset its prefix cache: a request is still running")
    await engine.generate_many(as_sampled, SampleSpec(n=1, temperature=0.0, max_tokens=1), request_id)


async def run(args) -> dict:
    from guard.engine.vllm_engine import VllmEngine
    from server.model_store import resolve_model_or_default

    variants = [Variant.parse(v) for v in args.variant]
    engine = VllmEngine(resolve_model_or_default(args.model), max_model_len=args.max_model_len)
    await engine.start()
    # Paths are sampled as the continue format samples them (its few-shot header teaches sub-question
    # lines), so its probes extend the very prompt the paths came from; legacy probes bring a header of
    # their own and never share the path's prefix, whichever header sampled it.
    sampling_format = (ProbeFormat.CONTINUE if any(v.probe_format is ProbeFormat.CONTINUE for v in variants)
                       else ProbeFormat.LEGACY)
    pipeline = GuardPipeline(engine, GuardConfig(probe_format=sampling_format))
    stages = {v: ConsistencyStage(engine, PromptBuilder(pipeline.config.prompt_style, engine.render_chat,
                                                        v.probe_format),
                                  StageCostModel(), v.max_tokens, pipeline.config.policy.ffs_agreement, v.probe_read,
                                  v.share)
              for v in variants}
    # Probe requests the engine gets (greedy probes are its only generate_many batches here).
    sent: list[int] = []
    generate_many = engine.generate_many

    dumped: list[dict] = []
    current: dict = {}

    async def counted(prompts, spec, request_id):
        sent.append(len(prompts))
        results = await generate_many(prompts, spec, request_id)
        if args.dump is not None and current:
            dumped.extend({**current, "text": c.text, "tokens": c.num_tokens, "truncated": c.truncated}
                          for r in results for c in r.completions)
        return results

    engine.generate_many = counted
    tallies = {v: Tally() for v in variants}
    problems = [p for name in args.data for p in datasets.load(name, Path(args.data_dir), args.limit)]
    problems = [p for p in problems if gold_ars(p)[0]]
    try:
        for n, problem in enumerate(problems):
            subs, gold_values = gold_ars(problem)
            params = GuardParams(question=problem.question, sub_questions=subs, num_paths=args.num_paths,
                                 max_tokens=args.max_tokens, seed=args.seed + n, request_id=f"probes-{n}")
            prompt = pipeline.prompts.path_prompt(params.question, params.system_prompt, [])
            start = time.perf_counter()
            sampled = await engine.generate(prompt, pipeline.sample_spec(params, params.num_paths), params.request_id)
            sample_ms = (time.perf_counter() - start) * 1e3
            print(f"[{n + 1}/{len(problems)}] {problem.id}: {len(subs)} sub-questions, sampled in {sample_ms:.0f} ms",
                  file=sys.stderr, flush=True)
            paths = pipeline.read_paths(sampled)
            as_sampled = [Prompt(prompt.text + c.text, prompt.images) for c in sampled.completions]
            for j in range(len(variants)):
                variant = variants[(n + j) % len(variants)]
                await warm_as_served(engine, as_sampled, f"{params.request_id}-warm-{j}")
                clock = StageClock()
                sent.clear()
                current.update(problem=problem.id, variant=variant.name)
                outcome = await stages[variant].run(params, [], paths, list(subs), clock, Budget())
                current.clear()  # the next variant's cache warm-up is no probe
                tally = tallies[variant]
                probe_ms = clock.timings_ms.get(Stage.PROBE, 0.0)
                tally.ratios.append(probe_ms / sample_ms)
                tally.probe_ms.append(probe_ms)
                tally.score_ratios.append(clock.timings_ms.get(Stage.SCORE, 0.0) / sample_ms)
                probe_usage = outcome.usage.get(Stage.PROBE, PhaseUsage())
                tally.usage.add(probe_usage.prompt_tokens, probe_usage.generated_tokens,
                                probe_usage.cached_prompt_tokens, probe_usage.truncated)
                tally.probes += len(paths) * len(subs)
                tally.sent += sum(sent)
                if outcome.value is not None:
                    tally_gold(tally, problem, gold_values, paths, outcome.value)
                print(f"  {variant.name}: probe {probe_ms:.0f} ms, score "
                      f"{clock.timings_ms.get(Stage.SCORE, 0.0):.0f} ms", file=sys.stderr, flush=True)
    finally:
        await engine.shutdown()
        if args.dump is not None:
            args.dump.parent.mkdir(parents=True, exist_ok=True)
            args.dump.write_text("".join(json.dumps(d) + "\n" for d in dumped))
    return {v.name: tallies[v].summary() for v in variants}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True, help="dataset with gold sub-questions (gsm8k, words)")
    p.add_argument("--data-dir", default=str(datasets.DEFAULT_DATA_DIR))
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--variant", action="append", required=True, help="FORMAT:READ:MAX_TOKENS, e.g. continue:greedy:12")
    p.add_argument("--num-paths", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="registered model name or model directory (default: the serve default)")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/probes.json"))
    p.add_argument("--dump", type=Path, help="also write every probe completion here (JSONL: problem, variant, "
                   "text, tokens, truncated)")
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    cols = ["probe_over_sample_p50", "probe_prompt_cached_share", "probes_sent_share", "probes_cut_share",
            "probe_accuracy", "probe_echo_rate", "ffs_match_rate"]
    print(f"{'variant':26s} " + " ".join(f"{c[:14]:>14s}" for c in cols))
    for name, row in results.items():
        print(f"{name:26s} " + " ".join(f"{row[c]:14.3f}" for c in cols))
    print(f"(right-path intermediate probes per variant: "
          f"{', '.join(str(r['intermediate_probes_on_right_paths']) for r in results.values())}; "
          f"wrong paths for FFS: {', '.join(str(r['ffs_wrong_paths']) for r in results.values())}; "
          f"paths right: {next(iter(results.values()))['paths_right_share']:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
