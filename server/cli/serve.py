"""`trace-guard serve`: its flags, the pipeline and server settings they make, and the engine it guards."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from guard.params import Defaults, Limits, Mode, ScoreMode
from guard.probe import ProbeRead
from guard.prompts import ProbeFormat, PromptStyle
from guard.scorers import SCORER_NAMES
from guard.scorers.majority import MajorityScorer
from server.options import ServerOptions

if TYPE_CHECKING:
    from guard.engine import Engine
    from guard.pipeline import GuardConfig

logger = logging.getLogger(__name__)

# The scorer `serve` uses when neither the flag nor the request names one. Deliberately not
# `Defaults.scorer` (the library's, "trace"): the served default follows the evaluation's verdict
# (benchmarks/README.md, "Does the guard help?"), which favours the plain vote.
SERVE_DEFAULT_SCORER = MajorityScorer.name


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="run the gRPC sidecar (in-process vLLM engine, or --upstream vLLM servers)")
    _add_engine_args(s)
    _add_request_default_args(s)
    _add_pipeline_args(s)
    _add_ab_args(s)
    _add_network_args(s)
    _add_security_args(s)
    s.set_defaults(func=run)


def _add_engine_args(s: argparse.ArgumentParser) -> None:
    from server.model_registry import FALLBACK_MODEL, MODELS, SERVE_DEFAULT_MODEL

    s.add_argument("--model", help="registered model name (fetched on first use: "
                                   f"{', '.join(sorted(MODELS))}) or local HF model directory (default: "
                                   f"$TRACE_GUARD_MODEL, else {SERVE_DEFAULT_MODEL}, falling back to "
                                   f"{FALLBACK_MODEL} when it cannot be fetched)")
    s.add_argument("--upstream", action="append", default=[], metavar="URL",
                   help="guard a running vLLM OpenAI-compatible server instead of an in-process engine, e.g. "
                        "http://127.0.0.1:8000/v1 (repeatable: replicas, one per request by consistent hashing, "
                        "with failover); API key from $TRACE_GUARD_UPSTREAM_API_KEY")
    s.add_argument("--tokenizer", help="with --upstream: local directory of the served model's tokenizer and chat "
                                       "template (default: the model path the upstream reports)")
    s.add_argument("--max-model-len", type=int, default=2048)
    s.add_argument("--block-size", type=int, default=32,
                   help="KV-cache block size; prefix-cache hits are whole blocks (CPU: a multiple of 32)")
    s.add_argument("--no-enforce-eager", action="store_true", help="allow torch.compile / CUDA graphs (slow start)")
    s.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weights/activations dtype (auto: vLLM's choice; on CPU bf16, whose greedy outputs can "
                        "change with batch composition; float32 is batch-invariant)")
    s.add_argument("--max-engine-restarts", type=int, default=ServerOptions.max_engine_restarts,
                   help="restart a dead engine in-process this many times, then exit non-zero (0: never)")


def _add_request_default_args(s: argparse.ArgumentParser) -> None:
    """Defaults of the per-request knobs (`guard.params.Defaults`) and their server-wide limit."""
    s.add_argument("--num-paths", type=int, default=Defaults.num_paths)
    s.add_argument("--max-num-paths", type=int, default=Limits.max_num_paths)
    s.add_argument("--temperature", type=float, default=Defaults.temperature)
    s.add_argument("--top-p", type=float, default=Defaults.top_p)
    s.add_argument("--max-tokens", type=int, default=Defaults.max_tokens)
    s.add_argument("--mode", choices=[m.value for m in Mode], default=Defaults.mode.value)
    s.add_argument("--scorer", choices=SCORER_NAMES, default=SERVE_DEFAULT_SCORER)
    s.add_argument("--score-mode", choices=[m.value for m in ScoreMode], default=Defaults.score_mode.value,
                   help="trace scorer: teacher-force every candidate (full), only contested sub-questions "
                   "(contested), or none (hard agreement only)")
    s.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=Defaults.adaptive,
                   help="adaptive sampling by default: one engine request per path, stop once the vote is "
                        "settled (--num-paths is then the most paths); requests may override")
    s.add_argument("--min-paths", type=int, default=Defaults.min_paths,
                   help="adaptive: never stop before this many paths finished")
    s.add_argument("--stop-level", type=float, default=Defaults.stop_level,
                   help="adaptive: stop when the leading answer stays the leader with this probability")
    s.add_argument("--parallel-paths", type=int, default=Defaults.parallel_paths,
                   help="adaptive: most paths sampled at once (never more than the vote could still need)")
    s.add_argument("--confidence-abort", action=argparse.BooleanOptionalAction, default=Defaults.confidence_abort,
                   help="online DeepConf by default: abort a running path whose sliding-window token confidence "
                        "falls under a threshold set from the request's first paths; requests may override")
    s.add_argument("--confidence-warmup", type=int, default=Defaults.confidence_warmup,
                   help="confidence abort: the first paths started, which run to their end and set the threshold")
    s.add_argument("--confidence-keep", type=float, default=Defaults.confidence_keep,
                   help="confidence abort: share of paths the threshold keeps (0.9 DeepConf-high, 0.1 -low)")


def _add_pipeline_args(s: argparse.ArgumentParser) -> None:
    from guard.pipeline import GuardConfig

    s.add_argument("--probe-max-tokens", type=int,
                   help="token limit of one sub-question probe; a probe cut at it counts as unanswered")
    s.add_argument("--probe-format", choices=[f.value for f in ProbeFormat], default=GuardConfig.probe_format.value,
                   help="continue: probes continue each path's own prompt and text up to its answer line (the "
                        "prefix cache serves them; the final answer is out of view); legacy: the path's whole "
                        "text under a probe header of its own")
    s.add_argument("--probe-read", choices=[r.value for r in ProbeRead], default=GuardConfig.probe_read.value,
                   help="greedy: a probe's answer is its greedy short answer; values: the likeliest (teacher-"
                        "forced) of the values the path wrote and that greedy answer")
    s.add_argument("--probe-ahead", action=argparse.BooleanOptionalAction, default=GuardConfig.probe_ahead,
                   help="sample the paths of a probing request one engine request each, so each path's probes "
                        "start as soon as it ends (not under a latency or token budget)")
    s.add_argument("--ars-retry-samples", type=int, default=GuardConfig.ars_retry_samples,
                   help="when the greedy sub-question set is unusable, sample this many more in one call "
                        "(0: no retry)")
    s.add_argument("--policy", help="policy JSON file (from `trace-guard calibrate`)")
    s.add_argument("--prompt-style", choices=[p.value for p in PromptStyle], default=GuardConfig.prompt_style.value,
                   help="fewshot completion prompt (best for small models) or the model's chat template")
    s.add_argument("--log-request-text", action="store_true",
                   help="log each request's question and answer (off: logs carry ids, decisions, timings)")


def _add_ab_args(s: argparse.ArgumentParser) -> None:
    o = ServerOptions
    s.add_argument("--guard-fraction", type=float, default=o.guard_fraction,
                   help="A/B split: share of requests (stable hash of ab_key or request_id) served guarded; the "
                        "rest get one raw sample (default: 1, or 0 with --mode raw)")
    s.add_argument("--shadow", action="store_true",
                   help="requests outside the guarded arm get the raw answer at raw latency and are guarded in the "
                        "background; both outcomes go to the decision log")
    s.add_argument("--shadow-max-pending", type=int, default=o.shadow_max_pending,
                   help="shadow runs waiting or running; more are dropped")
    s.add_argument("--shadow-max-concurrent", type=int, default=o.shadow_max_concurrent,
                   help="shadow runs using the engine at once")
    s.add_argument("--decision-log", metavar="PATH",
                   help="append one JSON line per decision (arm, raw and guarded outcome, ARS table, paths with "
                        "their text, timings) to PATH; holds request text")
    s.add_argument("--decision-log-max-bytes", type=int, default=o.decision_log_max_bytes,
                   help="rotate the log past this size")
    s.add_argument("--decision-log-backups", type=int, default=o.decision_log_backups,
                   help="rotated files kept (PATH.1 ... PATH.N)")


def _add_network_args(s: argparse.ArgumentParser) -> None:
    o = ServerOptions
    s.add_argument("--host", default=o.host)
    s.add_argument("--port", type=int, default=o.port, help="gRPC port (0: a free port)")
    s.add_argument("--metrics-port", type=int, default=o.metrics_port,
                   help="Prometheus port (0: a free port, -1: off)")
    s.add_argument("--port-file", help="write the bound ports as JSON to this file")
    s.add_argument("--max-concurrent", type=int, default=o.max_concurrent_requests, help="requests processed at once")
    s.add_argument("--max-queued", type=int, default=o.max_queued_requests,
                   help="requests waiting before RESOURCE_EXHAUSTED")
    s.add_argument("--grace-seconds", type=float, default=o.grace_seconds, help="drain time on SIGTERM")
    s.add_argument("--max-message-bytes", type=int, default=o.max_message_bytes,
                   help="largest gRPC message accepted or sent")


def _add_security_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--auth-token-file", help="require 'authorization: Bearer <token>' (token: first line of "
                   "the file; or set TRACE_GUARD_AUTH_TOKEN)")
    s.add_argument("--auth-protect-health", action="store_true", help="require the token for health checks too")
    s.add_argument("--tls-cert", help="server certificate chain (PEM); enables TLS with --tls-key")
    s.add_argument("--tls-key", help="server private key (PEM)")
    s.add_argument("--tls-client-ca", help="CA (PEM) that client certificates must chain to: mutual TLS")


def guard_config(args: argparse.Namespace) -> GuardConfig:
    """The pipeline settings `trace-guard serve` was given."""
    from guard.pipeline import GuardConfig
    from guard.policy import Policy

    if args.probe_max_tokens is not None and args.probe_max_tokens < 1:
        raise SystemExit("error: --probe-max-tokens must be at least 1")
    if args.ars_retry_samples < 0:
        raise SystemExit("error: --ars-retry-samples must be 0 or more")
    defaults = Defaults(
        num_paths=args.num_paths, temperature=args.temperature, top_p=args.top_p,
        max_tokens=args.max_tokens, mode=Mode(args.mode), scorer=args.scorer,
        score_mode=ScoreMode(args.score_mode), adaptive=args.adaptive, min_paths=args.min_paths,
        stop_level=args.stop_level, parallel_paths=args.parallel_paths, confidence_abort=args.confidence_abort,
        confidence_warmup=args.confidence_warmup, confidence_keep=args.confidence_keep,
    )
    limits = Limits(max_num_paths=args.max_num_paths)
    _check_defaults(defaults, limits)
    return GuardConfig(
        defaults=defaults,
        limits=limits,
        policy=Policy.load(args.policy) if args.policy else Policy(),
        prompt_style=PromptStyle(args.prompt_style),
        probe_max_tokens=args.probe_max_tokens or GuardConfig.probe_max_tokens,
        probe_format=ProbeFormat(args.probe_format),
        probe_read=ProbeRead(args.probe_read),
        probe_ahead=args.probe_ahead,
        ars_retry_samples=args.ars_retry_samples,
        log_request_text=args.log_request_text,
    )


def _check_defaults(defaults: Defaults, limits: Limits) -> None:
    """A request that sets nothing gets these defaults: refuse at start-up what every such request would be
    refused for, naming the flag."""
    from guard.errors import InvalidArgumentError
    from guard.params import GuardParams

    try:
        GuardParams.build(defaults=defaults, limits=limits, question="start-up check")
    except InvalidArgumentError as exc:
        raise SystemExit(f"error: --{exc.field.replace('_', '-')}: {exc.message}") from None


def server_options(args: argparse.Namespace) -> ServerOptions:
    """The server settings `trace-guard serve` was given."""
    from server.auth import load_token

    return ServerOptions(
        auth_token=load_token(args.auth_token_file),
        auth_health_open=not args.auth_protect_health,
        tls_cert_file=args.tls_cert, tls_key_file=args.tls_key, tls_client_ca_file=args.tls_client_ca,
        host=args.host, port=args.port, metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        max_concurrent_requests=args.max_concurrent, max_queued_requests=args.max_queued,
        grace_seconds=args.grace_seconds, port_file=args.port_file,
        max_message_bytes=args.max_message_bytes, max_engine_restarts=args.max_engine_restarts,
        guard_fraction=args.guard_fraction, shadow=args.shadow, shadow_max_pending=args.shadow_max_pending,
        shadow_max_concurrent=args.shadow_max_concurrent, decision_log_path=args.decision_log,
        decision_log_max_bytes=args.decision_log_max_bytes, decision_log_backups=args.decision_log_backups,
    )


def _engine(args: argparse.Namespace) -> Engine | None:
    """The engine to guard: the --upstream servers, or an in-process vLLM engine (None: error reported)."""
    if args.upstream:
        from guard.engine.openai_engine import OpenAIEngine

        if args.model:
            print("error: --model and --upstream exclude each other (use --tokenizer for the upstream's "
                  "tokenizer)", file=sys.stderr)
            return None
        return OpenAIEngine(args.upstream, tokenizer=args.tokenizer)
    from server.model_registry import UnknownModelError
    from server.model_store import ModelFetchError, choose_serve_model

    try:
        choice = choose_serve_model(args.model or os.environ.get("TRACE_GUARD_MODEL"))
    except (UnknownModelError, ModelFetchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    if choice.fallback_reason:
        logger.warning("%s", choice.fallback_reason)
    from guard.engine.vllm_engine import VllmEngine

    return VllmEngine(
        choice.model, max_model_len=args.max_model_len, enforce_eager=not args.no_enforce_eager,
        block_size=args.block_size, dtype=args.dtype,
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    from server.app import GuardServer

    config = guard_config(args)
    engine = _engine(args)
    if engine is None:
        return 2
    options = server_options(args)

    async def main() -> None:
        server = GuardServer(engine, config, options)
        await server.start()
        await server.serve_forever()

    asyncio.run(main())
    return 0
