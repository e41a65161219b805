"""Latency of guarded vs raw requests through the real sidecar over gRPC: p50/p95/p99, throughput, stages.

Starts its own sidecar on the default model (or uses --address), sends the same prompts in raw mode
and in guard mode for each scorer and N, at each concurrency level, and reports ratios measured in
this one run (guard / raw). Output: a table, JSON and a latency-CDF PNG.

    python -m benchmarks.latency --num-requests 8 --paths 8 --concurrency 1 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from benchmarks import datasets, plots
from benchmarks.sidecar import percentile, start_sidecar
from guard.params import ScoreMode
from guard.scorers import SCORER_NAMES
from guard.scorers.trace import TraceScorer
from guard.stages import Stage
from server.model_store import resolve_model_or_default
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc


def guard_call(stub, request_kwargs):
    """One Guard call per question: its generated tokens, stage timings and the sidecar's own time."""
    def call(q):
        resp = stub.Guard(pb.GuardRequest(question=q, **request_kwargs), timeout=600)
        timings = {t.stage: t.duration_ms for t in resp.timings}
        probe = next((u for u in resp.usage if u.phase == Stage.PROBE), None)
        return {"tokens": sum(u.generated_tokens for u in resp.usage), "timings": timings, "paths": len(resp.paths),
                "overhead_ms": max(0.0, timings.get(Stage.TOTAL, 0.0) - resp.engine_wait_ms),
                "probes": len(resp.sub_questions) * len(resp.paths) if probe is not None else 0,
                "probes_truncated": probe.truncated_completions if probe is not None else 0}
    return call


def peer_call(peer, approach: str, n: int, max_tokens: int):
    def call(q):
        resp = peer.ask(approach, q, n, max_tokens)
        return {"tokens": (resp.get("usage") or {}).get("completion_tokens", 0), "timings": {}, "overhead_ms": None,
                "probes": 0, "probes_truncated": 0}
    return call


def stream_call(stub, request_kwargs):
    """One GuardStream call per question: as guard_call, plus the time to the provisional answer."""
    def call(q):
        t0 = time.perf_counter()
        provisional_s = None
        decision = None
        for event in stub.GuardStream(pb.GuardRequest(question=q, **request_kwargs), timeout=600):
            if event.HasField("provisional") and provisional_s is None:
                provisional_s = time.perf_counter() - t0
            if event.HasField("decision"):
                decision = event.decision
        resp = decision.response
        timings = {t.stage: t.duration_ms for t in resp.timings}
        return {"tokens": sum(u.generated_tokens for u in resp.usage), "timings": timings, "paths": len(resp.paths),
                "overhead_ms": max(0.0, timings.get(Stage.TOTAL, 0.0) - resp.engine_wait_ms),
                "probes": 0, "probes_truncated": 0, "provisional_s": provisional_s, "retracted": decision.retracted}
    return call


def run_arm(call, questions, concurrency: int) -> dict:
    def one(q):
        t0 = time.perf_counter()
        out = call(q)
        return time.perf_counter() - t0, out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, questions))
    return summarise(results, time.perf_counter() - t0)


def run_arms_interleaved(arms, questions) -> dict[str, dict]:
    """Concurrency 1: each question goes through every arm before the next question, so load drift on
    a shared machine hits all arms alike."""
    results: dict[str, list] = {name: [] for name, _ in arms}
    for q in questions:
        for name, call in arms:
            t0 = time.perf_counter()
            out = call(q)
            results[name].append((time.perf_counter() - t0, out))
    return {name: summarise(rs, sum(r[0] for r in rs)) for name, rs in results.items()}


def _stream_summary(results: list) -> dict:
    provisional = [out["provisional_s"] for _, out in results if out.get("provisional_s") is not None]
    if not any("provisional_s" in out for _, out in results):
        return {}
    return {"provisional_p50_s": percentile(provisional, 0.5) if provisional else float("nan"),
            "retraction_rate": statistics.mean(bool(out["retracted"]) for _, out in results)}


def summarise(results: list, wall_s: float) -> dict:
    latencies = [r[0] for r in results]
    stages: dict[str, list[float]] = {}
    for _, out in results:
        for stage, ms in out["timings"].items():
            stages.setdefault(stage, []).append(ms)
    overhead = [out["overhead_ms"] for _, out in results if out["overhead_ms"] is not None]
    return {
        "latencies_s": latencies,
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "p99_s": percentile(latencies, 0.99),
        "requests_per_s": len(results) / wall_s,
        "generated_tokens_per_request": statistics.mean(out["tokens"] for _, out in results),
        "paths_per_request": statistics.mean(out.get("paths", 1) for _, out in results),
        **_stream_summary(results),
        "stage_p50_ms": {s: percentile(v, 0.5) for s, v in stages.items()},
        # Share of each request's total spent probing and scoring, per request, then the median.
        "probe_score_share_p50": percentile(
            [(out["timings"].get(Stage.PROBE, 0.0) + out["timings"].get(Stage.SCORE, 0.0)) / out["timings"][Stage.TOTAL]
             for _, out in results if out["timings"].get(Stage.TOTAL)], 0.5),
        "overhead_p50_ms": percentile(overhead, 0.5),
        # Share of sub-question probes cut at the probe token limit (left unanswered).
        "probes_truncated_share": (sum(out["probes_truncated"] for _, out in results)
                                   / max(1, sum(out["probes"] for _, out in results))),
    }


# The scorers the guard arms run by default: each of distinct cost once (deepconf-low is deepconf
# with another cut-off, so it costs what deepconf does).
DEFAULT_SCORERS = tuple(name for name in SCORER_NAMES if name != "deepconf-low")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", help="use a running sidecar instead of starting one")
    p.add_argument("--model", help="registered model name (fetched on first use) or model directory "
                   "(default: $TRACE_GUARD_MODEL, else the `serve` default, qwen2.5-coder-0.5b)")
    p.add_argument("--data", default="svamp")
    p.add_argument("--num-requests", type=int, default=8,
                   help="questions per arm and level (at least the level's concurrency)")
    p.add_argument("--paths", type=int, action="append", help="N values for guard arms (default 8)")
    p.add_argument("--scorer", action="append", choices=SCORER_NAMES,
                   help=f"scorers for guard arms (default: {', '.join(DEFAULT_SCORERS)})")
    p.add_argument("--score-mode", action="append", choices=[m.value for m in ScoreMode],
                   help="score modes for the trace arms, one arm each (default: the server's)")
    p.add_argument("--adaptive", type=int, action="append", metavar="PARALLEL",
                   help="also an adaptive-sampling arm per scorer and N, with this many paths at once (repeatable)")
    p.add_argument("--stop-level", type=float,
                   help="stop level of the adaptive arms (default: the server's, see GetInfo)")
    p.add_argument("--stream", action="store_true",
                   help="also a GuardStream arm per scorer and N: time to the provisional answer and to the decision")
    p.add_argument("--confidence-abort", action="store_true",
                   help="also an arm per scorer and N with the confidence abort (online DeepConf) on")
    p.add_argument("--concurrency", type=int, action="append", help="concurrency levels (default 1)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--peer", choices=["optillm"], help="also measure the optillm proxy in front of a vLLM "
                   "OpenAI server with the same model (needs `make optillm-venv`)")
    p.add_argument("--peer-approach", action="append",
                   help="optillm approaches (default: majority_voting and self_consistency_n)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    return p


def guard_arms(stub, args, paths: list[int], scorers: list[str]) -> list[tuple[str, object]]:
    """One arm per N and scorer (per score mode too, for trace when --score-mode is given)."""
    arms = []
    for n in paths:
        for s in scorers:
            request = {"mode": pb.MODE_GUARD, "scorer": s, "num_paths": n, "max_tokens": args.max_tokens,
                       "seed": 0}
            if s == TraceScorer.name and args.score_mode:
                arms += [(f"guard-{s}-{m}-n{n}", guard_call(stub, {**request, "score_mode": m}))
                         for m in args.score_mode]
            else:
                arms.append((f"guard-{s}-n{n}", guard_call(stub, request)))
            if args.stream:
                arms.append((f"stream-{s}-n{n}", stream_call(stub, request)))
            if args.confidence_abort:
                arms.append((f"guard-{s}-confabort-n{n}", guard_call(stub, {**request, "confidence_abort": True})))
            for parallel in args.adaptive or []:
                # Adaptive sampling: at most n paths, `parallel` at a time, stopped once the vote settles.
                adaptive = {"adaptive": True, "parallel_paths": parallel}
                name = f"guard-{s}-adaptive-p{parallel}"
                if args.stop_level is not None:
                    adaptive["stop_level"] = args.stop_level
                    name += f"-s{args.stop_level:g}"
                arms.append((f"{name}-n{n}", guard_call(stub, {**request, **adaptive})))
    return arms


def measure(address: str, args, peer, questions: list[str], paths: list[int], levels: list[int]) -> dict:
    """Every arm at every concurrency level, printed as it goes; results keyed 'ARM@cLEVEL'."""
    results: dict = {}
    with grpc.insecure_channel(address) as ch:
        stub = guard_pb2_grpc.GuardServiceStub(ch)
        # Warm-up: first requests pay one-off costs (allocation, prefix-cache fill of the few-shot header).
        raw = guard_call(stub, {"mode": pb.MODE_RAW, "max_tokens": args.max_tokens, "seed": 0})
        run_arm(raw, questions[:2], 1)
        arms = [("raw", raw), *guard_arms(stub, args, paths, args.scorer or list(DEFAULT_SCORERS))]
        if peer is not None:
            approaches = args.peer_approach or ["majority_voting", "self_consistency_n"]
            run_arm(peer_call(peer, approaches[0], 1, args.max_tokens), questions[:2], 1)  # warm-up
            arms += [(f"optillm-{a}-n{n}", peer_call(peer, a, n, args.max_tokens)) for n in paths for a in approaches]
        for c in levels:
            qs = questions[:max(args.num_requests, c)]
            level = run_arms_interleaved(arms, qs) if c == 1 else {name: run_arm(call, qs, c) for name, call in arms}
            for name, r in level.items():
                results[f"{name}@c{c}"] = r
                print(f"{name:<22} c={c:<3} p50={r['p50_s']:.2f}s p95={r['p95_s']:.2f}s "
                      f"rps={r['requests_per_s']:.2f} tokens={r['generated_tokens_per_request']:.0f} "
                      f"overhead_p50={r['overhead_p50_ms']:.1f}ms", flush=True)
    return results


def write_results(results: dict, out: Path) -> None:
    table = "\n".join(table_lines(results) + headline_ratios(results))
    print(table)
    (out / "latency.txt").write_text(table + "\n")
    (out / "latency.json").write_text(json.dumps(results, indent=2))
    plot_cdf(results, out / "latency_cdf.png")
    print(f"results in {out}/latency.json, plot {out}/latency_cdf.png")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    paths = args.paths or [8]
    levels = args.concurrency or [1]
    args.out.mkdir(parents=True, exist_ok=True)
    # Every level sends at least one full wave: concurrency 16 with 8 questions would measure 8.
    questions = [pr.question for pr in datasets.load(args.data, limit=max([args.num_requests, *levels]))]
    sidecar = None
    address = args.address
    # Resolved here, not by `serve`: the sidecar and the optillm peer run the same model, and a default
    # that cannot be fetched is an error here rather than a silent fallback to another model.
    model = resolve_model_or_default(args.model) if not address or args.peer else None
    if not address:
        sidecar = start_sidecar(model, ["--max-concurrent", "64", "--max-queued", "256"])
        address = sidecar.address
    peer = None
    try:
        if args.peer == "optillm":
            from benchmarks.peer import OptillmPeer

            peer = OptillmPeer(model).start()
        results = measure(address, args, peer, questions, paths, levels)
    finally:
        if sidecar is not None:
            sidecar.stop()
        if peer is not None:
            peer.stop()
    write_results(results, args.out)
    return 0


def table_lines(results: dict) -> list[str]:
    """One row per arm (ratios to raw at the same concurrency), then each arm's stage p50s."""
    lines = [(f"{'arm':<32}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'req/s':>7}{'tok/req':>9}{'x raw p50':>10}"
              f"{'probe+score %':>15}{'overhead ms':>12}")]
    for key, r in results.items():
        c = key.split("@")[1]
        raw = results[f"raw@{c}"]["p50_s"] if f"raw@{c}" in results else float("nan")
        share = r.get("probe_score_share_p50", float("nan"))
        share = 0.0 if math.isnan(share) else share  # no guarded request: nothing probed
        lines.append(f"{key:<32}{r['p50_s']:>8.2f}{r['p95_s']:>8.2f}{r['p99_s']:>8.2f}{r['requests_per_s']:>7.2f}"
                     f"{r['generated_tokens_per_request']:>9.0f}{r['p50_s'] / raw:>10.2f}{share * 100:>15.1f}"
                     f"{r['overhead_p50_ms']:>12.1f}")
    for key, r in results.items():
        if "provisional_p50_s" in r:
            raw = results.get(f"raw@{key.split('@')[1]}", {}).get("p50_s", float("nan"))
            lines.append(f"  {key}: provisional p50 {r['provisional_p50_s']:.2f} s = {r['provisional_p50_s'] / raw:.2f}x raw, "
                         f"decision p50 {r['p50_s']:.2f} s = {r['p50_s'] / raw:.2f}x raw, "
                         f"retracted {r['retraction_rate']:.0%}")
    lines += ["", "stage p50 ms (ars runs concurrently with sample):"]
    for key, r in results.items():
        st = r["stage_p50_ms"]
        if key.startswith("guard-"):
            stages = "  ".join(f"{s}={st[s]:.0f}" for s in (Stage.SAMPLE, Stage.ARS, Stage.PROBE, Stage.SCORE, Stage.TOTAL) if s in st)
            cut = f"  probes cut at limit {r['probes_truncated_share']:.0%}" if Stage.PROBE in st else ""
            lines.append(f"  {key:<30}{stages}{cut}")
    return lines


def headline_ratios(results: dict) -> list[str]:
    """p50 ratios within this run: each guard arm over raw and over each optillm arm at the same N and c."""
    out = ["", "p50 ratios (same run):"]
    for key, r in results.items():
        if not key.startswith("guard-"):
            continue
        arm, c = key.split("@")
        n = arm.rsplit("-", 1)[1]
        parts = [f"x raw {r['p50_s'] / results[f'raw@{c}']['p50_s']:.2f}"]
        for other, o in results.items():
            if other.startswith("optillm-") and other.endswith(f"-{n}@{c}"):
                parts.append(f"x {other.split('@')[0]} {r['p50_s'] / o['p50_s']:.2f}")
        out.append(f"  {key:<26}" + ", ".join(parts))
    return out


def plot_cdf(results: dict, path: Path) -> None:
    with plots.axes(path, "latency (s)", "share of requests", xscale="log") as ax:
        for key, r in results.items():
            xs = sorted(r["latencies_s"])
            ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=key)


if __name__ == "__main__":
    sys.exit(main())
