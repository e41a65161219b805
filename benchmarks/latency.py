"""Latency of guarded vs raw requests through the real sidecar over gRPC: p50/p95/p99, throughput, stages.

Starts its own sidecar on the default model (or uses --address), sends the same prompts in raw mode
and in guard mode for each scorer and N, at each concurrency level, and reports ratios measured in
this one run (guard / raw). Output: a table, JSON and a latency-CDF PNG.

    python -m benchmarks.latency --num-requests 8 --paths 8 --concurrency 1 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from benchmarks import datasets
from benchmarks.sidecar import percentile, start_sidecar
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc


def run_arm(stub, questions, request_kwargs, concurrency: int) -> dict:
    def one(q):
        t0 = time.perf_counter()
        resp = stub.Guard(pb.GuardRequest(question=q, **request_kwargs), timeout=600)
        return time.perf_counter() - t0, resp

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, questions))
    wall = time.perf_counter() - t0
    latencies = [r[0] for r in results]
    stages: dict[str, list[float]] = {}
    overhead = []
    for _, resp in results:
        timings = {t.stage: t.duration_ms for t in resp.timings}
        for stage, ms in timings.items():
            stages.setdefault(stage, []).append(ms)
        overhead.append(max(0.0, timings.get("total", 0.0) - resp.engine_wait_ms))
    return {
        "latencies_s": latencies,
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "p99_s": percentile(latencies, 0.99),
        "requests_per_s": len(results) / wall,
        "generated_tokens_per_request": statistics.mean(
            sum(u.generated_tokens for u in r.usage) for _, r in results),
        "stage_p50_ms": {s: percentile(v, 0.5) for s, v in stages.items()},
        "overhead_p50_ms": percentile(overhead, 0.5),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", help="use a running sidecar instead of starting one")
    p.add_argument("--model")
    p.add_argument("--data", default="svamp")
    p.add_argument("--num-requests", type=int, default=8)
    p.add_argument("--paths", type=int, action="append", help="N values for guard arms (default 8)")
    p.add_argument("--scorer", action="append", help="scorers for guard arms (default: all)")
    p.add_argument("--concurrency", type=int, action="append", help="concurrency levels (default 1)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = p.parse_args(argv)
    paths = args.paths or [8]
    scorers = args.scorer or ["majority", "deepconf", "trace"]
    levels = args.concurrency or [1]
    args.out.mkdir(parents=True, exist_ok=True)
    questions = [pr.question for pr in datasets.load(args.data, limit=args.num_requests)]
    sidecar = None
    address = args.address
    if not address:
        sidecar = start_sidecar(args.model, ["--max-concurrent", "64", "--max-queued", "256"])
        address = sidecar.address
    results: dict = {}
    try:
        with grpc.insecure_channel(address) as ch:
            stub = guard_pb2_grpc.GuardServiceStub(ch)
            # Warm-up: first requests pay one-off costs (allocation, prefix-cache fill of the few-shot header).
            run_arm(stub, questions[:2], {"mode": pb.MODE_RAW, "max_tokens": args.max_tokens, "seed": 0}, 1)
            arms = [("raw", {"mode": pb.MODE_RAW})] + [
                (f"guard-{s}-n{n}", {"mode": pb.MODE_GUARD, "scorer": s, "num_paths": n}) for n in paths for s in scorers
            ]
            for c in levels:
                for name, kwargs in arms:
                    r = run_arm(stub, questions, {**kwargs, "max_tokens": args.max_tokens, "seed": 0}, c)
                    results[f"{name}@c{c}"] = r
                    print(f"{name:<22} c={c:<3} p50={r['p50_s']:.2f}s p95={r['p95_s']:.2f}s "
                          f"rps={r['requests_per_s']:.2f} tokens={r['generated_tokens_per_request']:.0f} "
                          f"overhead_p50={r['overhead_p50_ms']:.1f}ms", flush=True)
    finally:
        if sidecar is not None:
            sidecar.stop()
    lines = [f"{'arm':<26}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'req/s':>7}{'tok/req':>9}{'x raw p50':>10}"
             f"{'probe+score %':>15}{'overhead ms':>12}"]
    for key, r in results.items():
        c = key.split("@")[1]
        raw = results[f"raw@{c}"]["p50_s"]
        st = r["stage_p50_ms"]
        share = (st.get("probe", 0) + st.get("score", 0)) / st["total"] * 100 if st.get("total") else 0.0
        lines.append(f"{key:<26}{r['p50_s']:>8.2f}{r['p95_s']:>8.2f}{r['p99_s']:>8.2f}{r['requests_per_s']:>7.2f}"
                     f"{r['generated_tokens_per_request']:>9.0f}{r['p50_s'] / raw:>10.2f}{share:>15.1f}"
                     f"{r['overhead_p50_ms']:>12.1f}")
    table = "\n".join(lines)
    print(table)
    (args.out / "latency.txt").write_text(table + "\n")
    (args.out / "latency.json").write_text(json.dumps(results, indent=2))
    plot_cdf(results, args.out / "latency_cdf.png")
    print(f"results in {args.out}/latency.json, plot {args.out}/latency_cdf.png")
    return 0


def plot_cdf(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, r in results.items():
        xs = sorted(r["latencies_s"])
        ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=key)
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("share of requests")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
