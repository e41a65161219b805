"""Decision quality of the guard on labelled data: accuracy, coverage, selective accuracy, AUROC, AURC, FFS.

Samples every problem once through the real pipeline (in-process vLLM engine), caches the raw
results as JSONL records, then scores each record with every scorer. Re-running with the same
--out re-uses the cache, so only new problems are sampled.

    python -m benchmarks.quality --data gsm8k:gold --data svamp:model --limit 100 --num-paths 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from benchmarks import datasets, streaming
from benchmarks.metrics import aurc, auroc, risk_coverage, spearman
from guard import replay as records
from guard.params import Defaults, GuardParams, ImageInput, Limits, Mode, ScoreMode, canonical_question
from guard.pipeline import GuardConfig
from guard.policy import Policy
from guard.probe import ProbeRead
from guard.prompts import ProbeFormat, PromptStyle
from guard.scorers import SCORER_NAMES

logger = logging.getLogger("benchmarks.quality")


def parse_spec(spec: str) -> tuple[str, str]:
    """'gsm8k:gold' -> ('gsm8k', 'gold'); ARS mode is gold (from the data), model (generated) or none."""
    name, _, ars = spec.partition(":")
    ars = ars or "model"
    if ars not in ("gold", "model", "none"):
        raise SystemExit(f"--data {spec}: ARS mode must be gold, model or none")
    return name, ars


async def sample_all(args, specs) -> dict[str, dict[str, records.Record]]:
    """Sample (or load from the records cache) every problem of every dataset, plus one greedy answer each."""
    from guard.pipeline import GuardPipeline
    from guard.prompts import PromptStyle

    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety, not a requirement
        tqdm = None

    engine = None
    pipeline = None

    async def ensure_pipeline() -> GuardPipeline:
        nonlocal engine, pipeline
        if pipeline is None:
            from guard.engine.vllm_engine import VllmEngine
            from server.model_store import resolve_model_or_default

            model = resolve_model_or_default(args.model)
            engine = VllmEngine(model, max_model_len=args.max_model_len)
            await engine.start()
            config = GuardConfig(
                defaults=Defaults(num_paths=args.num_paths, max_tokens=args.max_tokens),
                limits=Limits(max_sub_questions=8),
                prompt_style=PromptStyle(args.prompt_style),
                probe_max_tokens=args.probe_max_tokens,
                probe_format=ProbeFormat(args.probe_format),
                probe_read=ProbeRead(args.probe_read),
                probe_ahead=args.probe_ahead,
            )
            pipeline = GuardPipeline(engine, config)
        return pipeline

    async def run_all(todo, desc, one) -> list[str]:
        """Run `one` over the problems at --concurrency with a progress bar; ids of those that failed."""
        bar = tqdm(total=len(todo), desc=desc, unit="q") if tqdm and todo else None
        sem = asyncio.Semaphore(args.concurrency)
        failures: list[str] = []

        async def guarded(problem):
            try:
                async with sem:
                    await one(problem)
            except Exception as exc:
                logger.warning("%s: skipped (%s)", problem.id, exc)
                failures.append(problem.id)
            if bar:
                bar.update(1)

        await asyncio.gather(*(guarded(p) for p in todo))
        if bar:
            bar.close()
        if failures:
            print(f"{desc}: {len(failures)} problems failed: {failures[:10]}")
        return failures

    out: dict[str, dict[str, records.Record]] = {}
    for name, ars in specs:
        problems = datasets.load(name, Path(args.data_dir), args.limit)
        cache_path = args.out / records_file_name(name, ars, args)
        cached = records.load(cache_path)
        todo = [p for p in problems if p.id not in cached]
        print(f"{name}:{ars}: {len(todo)} to sample, {len(problems) - len(todo)} from {cache_path}", flush=True)
        if todo:
            await ensure_pipeline()

        async def sample(problem, ars=ars, cache_path=cache_path, cached=cached):
            subs, gold_subs = gold_ars(problem) if ars == "gold" else ((), ())
            params = GuardParams(
                question=problem.question, sub_questions=subs, num_paths=args.num_paths,
                images=problem_images(problem),
                temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed,
                scorer="trace" if ars != "none" else "majority", score_mode=args.score_mode,
                request_id=problem.id, adaptive=args.adaptive, min_paths=args.min_paths,
                parallel_paths=args.parallel_paths, stop_level=args.stop_level,
                confidence_abort=args.confidence_abort, confidence_warmup=args.confidence_warmup,
                confidence_keep=args.confidence_keep,
            )
            rec = records.Record.from_result(problem.id, problem.answer, gold_subs, await pipeline.run(params),
                                             question=problem.question)
            records.save([rec], cache_path)
            cached[problem.id] = rec

        # vLLM's own count of the work (only the in-process engine keeps one).
        work_before = engine.engine_work() if hasattr(engine, "engine_work") else None
        await run_all(todo, f"{name}:{ars}", sample)
        if work_before is not None and todo:
            work = engine.engine_work()
            print(f"{name}:{ars}: the engine generated {work['generation_tokens'] - work_before['generation_tokens']} "
                  f"tokens in {work['finished_requests'] - work_before['finished_requests']} requests for "
                  f"{len(todo)} problems (vLLM's count: aborted paths' partial tokens included)", flush=True)

        # Raw greedy baseline: one temperature-0 answer per problem, cached apart from the samples
        # (it does not depend on the ARS mode, and older records caches gain it without resampling).
        greedy_path = args.out / f"greedy-{Path(name).stem}-{args.prompt_style}-t{args.max_tokens}.jsonl"
        greedy = load_greedy(greedy_path)
        greedy_todo = [p for p in problems if p.id in cached and p.id not in greedy]
        if greedy_todo:
            await ensure_pipeline()

        async def decode_greedy(problem, greedy=greedy, greedy_path=greedy_path):
            params = GuardParams(
                question=problem.question, mode=Mode.RAW, temperature=0.0, max_tokens=args.max_tokens,
                images=problem_images(problem),
                request_id=f"{problem.id}:greedy",
            )
            a = (await pipeline.run(params)).answer
            greedy[problem.id] = list(records.encode_answer(a) or ())
            with greedy_path.open("a") as f:
                f.write(json.dumps({"problem_id": problem.id, "answer": greedy[problem.id]}) + "\n")

        await run_all(greedy_todo, f"{name}:greedy", decode_greedy)
        for rec in cached.values():
            if rec.problem_id in greedy:
                rec.greedy_answer = greedy[rec.problem_id]
        out[f"{name}:{ars}"] = {p.id: cached[p.id] for p in problems if p.id in cached}
    if engine is not None:
        await engine.shutdown()
    return out


def problem_images(problem: datasets.Problem) -> tuple[ImageInput, ...]:
    return tuple(ImageInput(data, mime_type) for data, mime_type in problem.images)


def load_greedy(path: Path) -> dict[str, list]:
    if not path.exists():
        return {}
    return {d["problem_id"]: d["answer"] for d in map(json.loads, path.read_text().splitlines()) if d}


def greedy_accuracy(recs: list[records.Record]) -> float:
    """Accuracy of the raw greedy (temperature 0) answer, over the problems that have one."""
    have = [r for r in recs if r.greedy_answer is not None]
    hits = sum(r.is_correct(records.decode_answer(r.greedy_answer)) for r in have)
    return hits / len(have) if have else float("nan")


def model_label(requested: str | None) -> str:
    """The model's directory name, whether it was asked for by registry name or by path."""
    from server.model_registry import MODELS, SERVE_DEFAULT_MODEL

    chosen = requested or os.environ.get("TRACE_GUARD_MODEL") or SERVE_DEFAULT_MODEL
    return MODELS[chosen].dir_name if chosen in MODELS else Path(chosen).name


def records_file_name(name: str, ars: str, args) -> str:
    """Cache of one dataset's records; the model and settings that change the samples or scores are in the name."""
    parts = [model_label(args.model), Path(name).stem, ars, args.prompt_style, f"n{args.num_paths}"]
    # Against `contested`, the default when most cached records were made (not today's default, `hard`),
    # so a cache of contested scores is never read as a run of another mode.
    if args.score_mode != ScoreMode.CONTESTED.value:
        parts.append(f"score-{args.score_mode}")
    if args.probe_max_tokens != GuardConfig.probe_max_tokens:
        parts.append(f"probe{args.probe_max_tokens}")
    if args.probe_format != GuardConfig.probe_format.value:
        parts.append(f"probes-{args.probe_format}")
    if args.probe_read != GuardConfig.probe_read.value:
        parts.append(f"read-{args.probe_read}")
    if args.probe_ahead != GuardConfig.probe_ahead:
        parts.append("ahead" if args.probe_ahead else "no-ahead")
    if args.adaptive:
        parts.append(f"adaptive-m{args.min_paths}-p{args.parallel_paths}-s{args.stop_level:g}")
    if args.confidence_abort:
        parts.append(f"confabort-w{args.confidence_warmup}-k{args.confidence_keep:g}")
    return "records-" + "-".join(parts) + ".jsonl"


def gold_ars(problem: datasets.Problem, max_k: int = 8) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The data's sub-questions with their gold values, minus repeats (some GSM8K rows repeat one)."""
    seen: set[str] = set()
    subs, values = [], []
    main = canonical_question(problem.question)
    for sub, value in zip(problem.sub_questions, problem.sub_answers):
        key = canonical_question(sub)
        if key in seen or key == main:
            continue
        seen.add(key)
        subs.append(sub)
        values.append(value)
    return tuple(subs[:max_k]), tuple(values[:max_k])


def evaluate(recs: list[records.Record], scorer: str, policy: Policy) -> dict:
    outcomes = [records.rescore(r, scorer, policy) for r in recs]
    n = len(outcomes)
    correct = [o.correct for o in outcomes]
    # The confidence as the deployed rule uses it: -inf where a gate (tie, silent failure, no answer)
    # abstains at any threshold, so curves and AUROC rank what the server could accept.
    conf = [o.gated_confidence for o in outcomes]
    accepted = [o for o in outcomes if o.accepted]
    row = {
        "n": n,
        "accuracy": sum(correct) / n if n else float("nan"),
        "coverage": len(accepted) / n if n else float("nan"),
        "accepted_accuracy": sum(o.correct for o in accepted) / len(accepted) if accepted else float("nan"),
        "auroc": auroc(conf, correct),
        "aurc": aurc(conf, correct),
        "oracle_any_correct": sum(o.any_correct for o in outcomes) / n if n else float("nan"),
        "regions": {reg: sum(o.region.value == reg for o in outcomes) for reg in
                    ("reliable", "silent_risk", "uncertain", "no_answer")},
    }
    if scorer == "trace":
        with_ars = [o for o in outcomes if o.sub_questions]
        row["ars_usable"] = len(with_ars)
        row["echo_rate"] = (sum(o.echo for o in with_ars) / sum(o.sub_questions for o in with_ars)
                            if with_ars else float("nan"))
        row["spearman_ars_agreement_correct"] = spearman([o.ars_agreement for o in outcomes], [float(c) for c in correct])
        m = t = 0
        for r in recs:
            a, b = records.ffs_matches(r, policy)
            m, t = m + a, t + b
        row["ffs_match_rate"] = m / t if t else float("nan")
        row["ffs_wrong_paths"] = t
    row["_curve"] = risk_coverage(conf, correct)
    return row


def engine_tokens(recs: list[records.Record]) -> float:
    """Mean engine tokens per problem, all phases: generated plus prompt tokens not served from the cache."""
    from benchmarks import verdict

    return sum(verdict.engine_tokens(r) for r in recs) / len(recs) if recs else float("nan")


def single_sample_accuracy(recs: list[records.Record]) -> float:
    """Accuracy of the first sampled path alone: the raw single-sample baseline at the same temperature."""
    hits = 0
    for r in recs:
        hits += r.is_correct(r.answer_objects()[0] if r.answers else None)
    return hits / len(recs) if recs else float("nan")


def fmt(x) -> str:
    return "  n/a" if isinstance(x, float) and math.isnan(x) else f"{x:5.3f}" if isinstance(x, float) else str(x)


def interval_report(all_records, policy: Policy, results: dict, matched: dict, num_resamples: int,
                    out_dir: Path) -> list[str]:
    """Paired-bootstrap tables per dataset and pooled over all, with gold-step checks; adds them to `results`."""
    from benchmarks import verdict

    groups = {key: list(recs.values()) for key, recs in all_records.items() if recs}
    if len(groups) > 1:
        groups["all"] = [r for recs in groups.values() for r in recs]
    pooled_matched = {pid: rec for recs in matched.values() for pid, rec in recs.items()}
    if pooled_matched:
        # The pooled table keeps every problem; the compute-matched comparison pools those with a matched run.
        groups["all@matched"] = [r for r in groups.get("all", []) if r.problem_id in pooled_matched]
    lines = [f"paired bootstrap, {num_resamples} resamples, 95% intervals "
             f"(confidence as the deployed rule sees it; single/greedy: raw answers)"]
    bands = {}
    for key, recs in groups.items():
        match = pooled_matched if key == "all@matched" else matched.get(key)
        cols = verdict.columns(recs, SCORER_NAMES, policy, match)
        result = verdict.intervals(cols, num_resamples, seed=0)
        gold = verdict.gold_steps(recs, policy)
        results.setdefault(key, {})["intervals"] = verdict.as_json(result)
        results[key]["targets"] = verdict.targets(result)
        results[key]["gold_steps"] = gold
        lines += verdict.table(f"{key} (n={len(cols.correct['single'])})", result)
        if gold["intermediate_probes_on_right_paths"]:
            lines.append(
                f"  gold steps: probe = gold value on {gold['probe_accuracy']:.1%} and = the path's own answer on "
                f"{gold['probe_echo_rate']:.1%} of {gold['intermediate_probes_on_right_paths']} intermediate probes of "
                f"right paths; FFS = first wrong gold step on {gold['ffs_match_rate']:.1%} of "
                f"{gold['ffs_wrong_paths']} wrong paths")
        bands[key] = cols
    plot_bands(bands, num_resamples, out_dir / "risk_coverage_bands.png")
    print("\n".join(lines))
    return lines


def _style_risk_axes(ax, title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("coverage")
    ax.set_ylabel("risk (error rate among accepted)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bands(bands: dict, num_resamples: int, path: Path) -> None:
    """Risk-coverage curves with 95% bootstrap bands, one panel per dataset (and pooled)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed; no plot")
        return
    from benchmarks.stats import risk_coverage_band

    grid = [i / 50 for i in range(1, 51)]
    fig, axes = plt.subplots(1, len(bands), figsize=(5 * len(bands), 4), squeeze=False)
    for ax, (key, cols) in zip(axes[0], bands.items()):
        for scorer in [*SCORER_NAMES, *(k for k in cols.correct if k.endswith("@matched"))]:
            band = risk_coverage_band(cols.correct[scorer], cols.confidence[scorer], grid, num_resamples, seed=0)
            (line,) = ax.plot(band.coverage, band.risk, label=scorer)
            ax.fill_between(band.coverage, band.low, band.high, color=line.get_color(), alpha=0.15)
        single = sum(cols.correct["single"]) / max(1, len(cols.correct["single"]))
        ax.axhline(1 - single, color="grey", linestyle=":", label="raw single sample")
        _style_risk_axes(ax, key)
    _save(fig, path)


def report(all_records, policy: Policy, out_dir: Path, num_resamples: int = 0, matched: dict | None = None) -> dict:
    results = {}
    lines = [
        f"{'dataset:ars':<22}{'method':<13}{'n':>5}{'acc':>7}{'cover':>7}{'acc@acc':>8}{'AUROC':>7}{'AURC':>7}"
        f"{'rho':>7}{'FFS=':>7}"
    ]
    for key, recs_by_id in all_records.items():
        recs = list(recs_by_id.values())
        if not recs:
            continue
        results[key] = {"greedy_accuracy": greedy_accuracy(recs), "single_sample_accuracy": single_sample_accuracy(recs)}
        lines.append(f"{key:<22}{'greedy':<13}{len(recs):>5}{fmt(results[key]['greedy_accuracy']):>7}")
        lines.append(f"{key:<22}{'single':<13}{len(recs):>5}{fmt(results[key]['single_sample_accuracy']):>7}")
        for scorer in SCORER_NAMES:
            row = evaluate(recs, scorer, policy)
            results[key][scorer] = row
            lines.append(
                f"{key:<22}{scorer:<13}{row['n']:>5}{fmt(row['accuracy']):>7}{fmt(row['coverage']):>7}"
                f"{fmt(row['accepted_accuracy']):>8}{fmt(row['auroc']):>7}{fmt(row['aurc']):>7}"
                f"{fmt(row.get('spearman_ars_agreement_correct', float('nan'))):>7}{fmt(row.get('ffs_match_rate', float('nan'))):>7}"
            )
        trace_row = results[key].get("trace", {})
        if trace_row.get("ars_usable"):
            lines.append(f"{'':<22}ARS on {trace_row['ars_usable']}/{len(recs)} problems, "
                         f"echo sub-questions {trace_row['echo_rate']:.0%}")
        for scorer in ("majority", "trace"):
            stream = streaming.retraction_row(recs, scorer, policy)
            results[key][f"stream_{scorer}"] = stream
            lines.append(f"{'':<22}stream/{scorer}: provisional acc {fmt(stream['provisional_accuracy'])}, retracted "
                         f"{fmt(stream['retraction_rate'])} (abstain {fmt(stream['retracted_abstain'])}, changed "
                         f"{fmt(stream['retracted_changed'])}), committed acc {fmt(stream['committed_accuracy'])}")
        lat = sorted(r.latency_ms for r in recs)
        results[key]["engine_tokens_per_problem"] = engine_tokens(recs)
        results[key]["sample_tokens_per_problem"] = sum((r.usage or {}).get("sample", (0, 0, 0))[1] for r in recs) / len(recs)
        lines.append(f"{'':<22}latency p50 {lat[len(lat) // 2] / 1e3:.1f}s, tokens/problem "
                     f"{sum(r.generated_tokens for r in recs) / len(recs):.0f} generated "
                     f"({results[key]['sample_tokens_per_problem']:.0f} sampling), "
                     f"{results[key]['engine_tokens_per_problem']:.0f} engine (generated + uncached prompt)")
    table = "\n".join(lines)
    print(table)
    plot_risk_coverage(results, out_dir / "risk_coverage.png")
    if num_resamples:
        interval_lines = interval_report(all_records, policy, results, matched or {}, num_resamples, out_dir)
        table += "\n\n" + "\n".join(interval_lines)
    for per_data in results.values():
        for row in per_data.values():
            if isinstance(row, dict):
                row.pop("_curve", None)
    (out_dir / "quality.json").write_text(json.dumps(results, indent=2, default=str))
    (out_dir / "quality.txt").write_text(table + "\n")
    return results


def plot_risk_coverage(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed; no plot")
        return
    fig, axes = plt.subplots(1, max(1, len(results)), figsize=(5 * max(1, len(results)), 4), squeeze=False)
    for ax, (key, per) in zip(axes[0], results.items()):
        for scorer in SCORER_NAMES:
            cov, risk = per[scorer]["_curve"]
            ax.plot(cov, risk, label=f"{scorer} (AURC {per[scorer]['aurc']:.3f})")
        _style_risk_axes(ax, key)
    _save(fig, path)


def sample_matched(args, specs, all_records) -> dict[str, dict[str, records.Record]]:
    """Records of a plain vote with as many paths as trace's tokens would buy, keyed like `all_records`."""
    from benchmarks.verdict import matched_num_paths

    trace_recs = [r for key, recs in all_records.items() if not key.endswith(":none") for r in recs.values()]
    n = int(args.matched) if args.matched != "auto" else matched_num_paths(trace_recs, args.num_paths)
    if n is None:
        print("--matched auto: the records carry no token usage (made before it was kept); skipped")
        return {}
    print(f"compute-matched vote: {n} paths per problem (trace used {args.num_paths} paths plus probes)", flush=True)
    matched_args = argparse.Namespace(**{**vars(args), "num_paths": n})
    chosen = [(name, ars) for name, ars in specs if not args.matched_data or name in args.matched_data]
    matched = asyncio.run(sample_all(matched_args, [(name, "none") for name, _ in chosen]))
    return {f"{name}:{ars}": matched[f"{name}:none"] for name, ars in chosen}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True,
                   help="DATASET[:ARS] with ARS gold|model|none, e.g. gsm8k:gold, svamp:model, visual:gold "
                        "(generated images: visual[-TASK][@SEED], see benchmarks/visual.py) (repeatable)")
    p.add_argument("--data-dir", default=str(datasets.DEFAULT_DATA_DIR))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--num-paths", type=int, default=Defaults.num_paths)
    p.add_argument("--max-tokens", type=int, default=Defaults.max_tokens)
    p.add_argument("--temperature", type=float, default=Defaults.temperature)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--prompt-style", choices=[s.value for s in PromptStyle],
                   default=GuardConfig.prompt_style.value)
    p.add_argument("--score-mode", choices=[m.value for m in ScoreMode], default=Defaults.score_mode.value,
                   help="how the trace scorer scores probe answers (full, contested, hard)")
    p.add_argument("--probe-max-tokens", type=int, default=GuardConfig.probe_max_tokens)
    p.add_argument("--probe-format", choices=[f.value for f in ProbeFormat], default=GuardConfig.probe_format.value,
                   help="how probes put sub-questions to the paths (the serve flag of the same name)")
    p.add_argument("--probe-read", choices=[r.value for r in ProbeRead], default=GuardConfig.probe_read.value,
                   help="how a probe's answer is read (the serve flag of the same name)")
    p.add_argument("--probe-ahead", action=argparse.BooleanOptionalAction, default=GuardConfig.probe_ahead,
                   help="sample a probing request's paths one request each and probe each as it ends")
    p.add_argument("--adaptive", action="store_true",
                   help="adaptive sampling: stop once the vote is settled (--num-paths is then the most paths)")
    p.add_argument("--confidence-abort", action="store_true",
                   help="online DeepConf: abort paths whose token confidence collapses (engine tokens are counted)")
    p.add_argument("--confidence-warmup", type=int, default=Defaults.confidence_warmup)
    p.add_argument("--confidence-keep", type=float, default=Defaults.confidence_keep)
    p.add_argument("--min-paths", type=int, default=Defaults.min_paths)
    p.add_argument("--parallel-paths", type=int, default=Defaults.parallel_paths)
    p.add_argument("--stop-level", type=float, default=Defaults.stop_level)
    p.add_argument("--model", help="registered model name (fetched on first use) or model directory "
                   "(default: $TRACE_GUARD_MODEL, else the `serve` default, qwen2.5-coder-0.5b)")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--policy", help="policy file to evaluate (default: the built-in policy)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="paired bootstrap resamples for the interval tables (0: no intervals)")
    p.add_argument("--matched", default="off",
                   help="compute-matched votes: 'auto' samples, without an ARS, as many paths as trace's measured "
                        "engine tokens buy (N x trace tokens / sampling tokens); an integer sets that count")
    p.add_argument("--matched-data", action="append",
                   help="datasets (by name) that get the compute-matched vote (repeatable; default: all)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = [parse_spec(s) for s in args.data]
    start = time.perf_counter()
    all_records = asyncio.run(sample_all(args, specs))
    policy = Policy.load(args.policy) if args.policy else Policy()
    matched = sample_matched(args, specs, all_records) if args.matched != "off" else None
    report(all_records, policy, args.out, args.bootstrap, matched)
    print(f"done in {time.perf_counter() - start:.0f}s; results in {args.out}/quality.json, plot {args.out}/risk_coverage.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
