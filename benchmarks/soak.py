"""Soak: many concurrent clients against the real sidecar for a fixed time.

Reports completed requests, status-code counts, p50/p99 latency of successful calls, the sidecar's
resident memory (with its engine processes) before and after, how long the engine takes to go idle
once the load stops, and how long it takes to go idle after clients cancel a request at one second.
Output: a table, JSON and a PNG of latency over time coloured by status.

    python -m benchmarks.soak --clients 64 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import grpc

from benchmarks import datasets, plots
from benchmarks.sidecar import Sidecar, percentile, start_sidecar
from server.pb import guard_pb2 as pb
from server.pb import guard_pb2_grpc


async def client_loop(stub, questions: list[str], kwargs: dict, until: float, timeout: float, log: list, seed: int):
    rng = random.Random(seed)
    while time.monotonic() < until:
        q = rng.choice(questions)
        t0 = time.monotonic()
        try:
            await stub.Guard(pb.GuardRequest(question=q, **kwargs), timeout=timeout)
            code = "OK"
        except grpc.aio.AioRpcError as err:
            code = err.code().name
        log.append((t0, time.monotonic() - t0, code))
        if code == "RESOURCE_EXHAUSTED":
            # What a well-behaved client does when told the server is full: back off with jitter.
            await asyncio.sleep(rng.uniform(0.05, 0.25))


def wait_idle(sidecar: Sidecar, timeout: float) -> float | None:
    """Seconds until the engine runs no request and the sidecar has none in flight."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        running = sidecar.metric("trace_guard_engine_requests_running")
        in_flight = sidecar.metric("trace_guard_requests_in_flight")
        if running == 0 and in_flight == 0:
            return time.monotonic() - start
        time.sleep(0.02)
    return None


async def cancel_probe(address: str, sidecar: Sidecar, rounds: int) -> list[float | None]:
    """Clients that cancel after one second: seconds until the engine is idle again, per round."""
    out: list[float | None] = []
    async with grpc.aio.insecure_channel(address) as ch:
        stub = guard_pb2_grpc.GuardServiceStub(ch)
        for i in range(rounds):
            call = stub.Guard(pb.GuardRequest(question="Write a long story about apples and count them.",
                                              num_paths=8, max_tokens=1024, request_id=f"soak-cancel-{i}"),
                              timeout=300)
            await asyncio.sleep(1.0)
            call.cancel()
            out.append(await asyncio.to_thread(wait_idle, sidecar, 30.0))
    return out


async def run_load(address: str, args, questions: list[str]) -> list:
    kwargs = {"mode": pb.MODE_RAW if args.mode == "raw" else pb.MODE_GUARD, "max_tokens": args.max_tokens}
    if args.mode == "guard":
        kwargs.update(scorer=args.scorer, num_paths=args.paths)
    log: list = []
    until = time.monotonic() + args.duration
    # A few channels shared by the clients, as a pool of connections from several app servers would be.
    channels = [grpc.aio.insecure_channel(address) for _ in range(min(8, args.clients))]
    try:
        stubs = [guard_pb2_grpc.GuardServiceStub(ch) for ch in channels]
        await asyncio.gather(*(
            client_loop(stubs[i % len(stubs)], questions, kwargs, until, args.timeout, log, seed=i)
            for i in range(args.clients)
        ))
    finally:
        for ch in channels:
            await ch.close()
    return log


def summarize(log: list, duration: float) -> dict:
    codes: dict[str, int] = {}
    for _, _, code in log:
        codes[code] = codes.get(code, 0) + 1
    ok = [lat for _, lat, code in log if code == "OK"]
    return {
        "calls": len(log),
        "completed_ok": len(ok),
        "status_counts": dict(sorted(codes.items())),
        "ok_per_s": len(ok) / duration,
        "p50_s": percentile(ok, 0.5),
        "p99_s": percentile(ok, 0.99),
    }


def plot(log: list, start: float, path: Path) -> None:
    with plots.axes(path, "request start (s into the soak)", "latency (s)", yscale="log") as ax:
        for code in sorted({c for _, _, c in log}):
            pts = [(t - start, lat) for t, lat, c in log if c == code]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, label=f"{code} ({len(pts)})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", help="use a running sidecar instead of starting one")
    p.add_argument("--metrics-url", help="its metrics endpoint (with --address)")
    p.add_argument("--model")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--mode", choices=["guard", "raw"], default="guard")
    p.add_argument("--scorer", default="majority")
    p.add_argument("--paths", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--timeout", type=float, default=30.0, help="per-call deadline in seconds")
    p.add_argument("--max-concurrent", type=int, default=8, help="sidecar slots (when started here)")
    p.add_argument("--max-queued", type=int, default=32, help="sidecar queue (when started here)")
    p.add_argument("--cancel-rounds", type=int, default=3, help="cancel-after-1s checks after the load")
    p.add_argument("--data", default="svamp")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    questions = [pr.question for pr in datasets.load(args.data, limit=64)]

    if args.address:
        sidecar = Sidecar(None, args.address, args.metrics_url)
    else:
        sidecar = start_sidecar(args.model, ["--max-concurrent", str(args.max_concurrent),
                                             "--max-queued", str(args.max_queued)])
    result: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    try:
        # Warm-up, then the memory baseline.
        asyncio.run(run_load(sidecar.address, argparse.Namespace(**{**vars(args), "clients": 2, "duration": 3.0}),
                             questions))
        result["rss_before_bytes"] = sidecar.rss_bytes()
        start = time.monotonic()
        print(f"soak: {args.clients} clients for {args.duration:.0f}s ({args.mode}, {args.scorer}, "
              f"n={args.paths}, max_tokens={args.max_tokens})", flush=True)
        log = asyncio.run(run_load(sidecar.address, args, questions))
        result.update(summarize(log, time.monotonic() - start))
        result["idle_after_load_s"] = wait_idle(sidecar, 60.0) if sidecar.metrics_url else None
        result["rss_after_bytes"] = sidecar.rss_bytes()
        if args.cancel_rounds and sidecar.metrics_url:
            result["cancel_idle_s"] = asyncio.run(cancel_probe(sidecar.address, sidecar, args.cancel_rounds))
        result["sidecar_alive"] = sidecar.proc is None or sidecar.proc.poll() is None
    finally:
        result["exit_code_on_sigterm"] = sidecar.stop()
    table = format_table(result)
    print(table)
    (args.out / "soak.txt").write_text(table + "\n")
    (args.out / "soak.json").write_text(json.dumps(result, indent=2))
    plot(log, start, args.out / "soak.png")
    print(f"results in {args.out}/soak.json, plot {args.out}/soak.png")
    return 0


def format_table(r: dict) -> str:
    def mib(v):
        return f"{v / 2**20:.0f} MiB" if v else "n/a"

    cancel = r.get("cancel_idle_s") or []
    rows = [
        ("calls", r["calls"]),
        ("completed OK", f"{r['completed_ok']} ({r['ok_per_s']:.2f}/s)"),
        ("status counts", ", ".join(f"{k}={v}" for k, v in r["status_counts"].items())),
        ("latency of OK calls p50 / p99", f"{r['p50_s']:.2f} s / {r['p99_s']:.2f} s"),
        ("sidecar RSS before / after", f"{mib(r.get('rss_before_bytes'))} / {mib(r.get('rss_after_bytes'))}"),
        ("engine idle after the load stopped", f"{r['idle_after_load_s']:.2f} s" if r.get("idle_after_load_s")
         is not None else "n/a"),
        ("engine idle after cancel-at-1s", ", ".join(f"{c:.3f} s" if c is not None else "never" for c in cancel)
         or "n/a"),
        ("sidecar alive after the soak; exit code on SIGTERM", f"{r['sidecar_alive']}; {r['exit_code_on_sigterm']}"),
    ]
    return "\n".join(f"{k:<52}{v}" for k, v in rows)


if __name__ == "__main__":
    sys.exit(main())
