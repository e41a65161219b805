"""The `trace-guard` command: serve the sidecar, ask it a question, show its info, fetch a model."""

from __future__ import annotations

import argparse
import json
import logging
import mimetypes
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from guard.scorers import SCORER_NAMES

if TYPE_CHECKING:
    from guard.pipeline import GuardConfig

DEFAULT_ADDRESS = os.environ.get("TRACE_GUARD_ADDRESS", "127.0.0.1:50051")


def guard_config(args: argparse.Namespace) -> GuardConfig:
    """The pipeline settings `trace-guard serve` was given."""
    from guard.params import Defaults, Limits, Mode, ScoreMode
    from guard.pipeline import GuardConfig
    from guard.policy import Policy
    from guard.prompts import ProbeFormat, PromptStyle

    if args.probe_max_tokens is not None and args.probe_max_tokens < 1:
        raise SystemExit("error: --probe-max-tokens must be at least 1")
    if args.ars_retry_samples < 0:
        raise SystemExit("error: --ars-retry-samples must be 0 or more")
    return GuardConfig(
        defaults=Defaults(
            num_paths=args.num_paths, temperature=args.temperature, top_p=args.top_p,
            max_tokens=args.max_tokens, mode=Mode(args.mode), scorer=args.scorer,
            score_mode=ScoreMode(args.score_mode),
        ),
        limits=Limits(max_num_paths=args.max_num_paths),
        policy=Policy.load(args.policy) if args.policy else Policy(),
        prompt_style=PromptStyle(args.prompt_style),
        probe_max_tokens=args.probe_max_tokens or GuardConfig.probe_max_tokens,
        probe_format=ProbeFormat(args.probe_format),
        ars_retry_samples=args.ars_retry_samples,
        log_request_text=args.log_request_text,
    )


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from server.app import GuardServer, ServerOptions

    config = guard_config(args)
    if args.upstream:
        from guard.engine.openai_engine import OpenAIEngine

        if args.model:
            print("error: --model and --upstream exclude each other (use --tokenizer for the upstream's "
                  "tokenizer)", file=sys.stderr)
            return 2
        engine = OpenAIEngine(args.upstream, tokenizer=args.tokenizer)
    else:
        from server.model_registry import UnknownModelError
        from server.model_store import ModelFetchError, choose_serve_model

        try:
            choice = choose_serve_model(args.model or os.environ.get("TRACE_GUARD_MODEL"))
        except (UnknownModelError, ModelFetchError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if choice.fallback_reason:
            logging.getLogger(__name__).warning("%s", choice.fallback_reason)
        model = choice.model
        from guard.engine.vllm_engine import VllmEngine

        engine = VllmEngine(
            model, max_model_len=args.max_model_len, enforce_eager=not args.no_enforce_eager,
            block_size=args.block_size, dtype=args.dtype,
        )
    from server.auth import load_token

    options = ServerOptions(
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

    async def main() -> None:
        server = GuardServer(engine, config, options)
        await server.start()
        await server.serve_forever()

    asyncio.run(main())
    return 0


def _channel(args: argparse.Namespace):
    """A channel to the sidecar and the metadata to send on each call.

    TLS when a CA is given (client cert too for mutual TLS); the bearer token rides as call
    credentials on TLS, and as plain metadata on a plaintext channel, which cannot carry credentials.
    """
    import grpc

    token = args.token or os.environ.get("TRACE_GUARD_AUTH_TOKEN")
    if not args.tls_ca:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        return grpc.insecure_channel(args.address), metadata
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(args.tls_ca).read_bytes(),
        private_key=Path(args.tls_key).read_bytes() if args.tls_key else None,
        certificate_chain=Path(args.tls_cert).read_bytes() if args.tls_cert else None,
    )
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(args.address, creds), None


def _read_image(path: str):
    from server.pb import guard_pb2 as pb

    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return pb.Image(data=Path(path).read_bytes(), mime_type=mime)


def _ask(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format

    from server.pb import guard_pb2 as pb
    from server.pb import guard_pb2_grpc

    req = pb.GuardRequest(
        question=args.question,
        images=[_read_image(p) for p in args.image],
        sub_questions=args.sub_question,
        mode=pb.MODE_RAW if args.raw else pb.MODE_UNSPECIFIED,
        return_paths_text=args.show_paths,
        scorer=args.scorer or "",
        score_mode=args.score_mode or "",
        system_prompt=args.system_prompt or "",
        arm=pb.Arm.Value(f"ARM_{args.arm.upper()}") if args.arm else pb.ARM_UNSPECIFIED,
        ab_key=args.ab_key or "",
    )
    fields = {"paths": "num_paths", "temperature": "temperature", "max_tokens": "max_tokens", "seed": "seed",
              "budget_ms": "latency_budget_ms"}
    for name, field in fields.items():
        value = getattr(args, name)
        if value is not None:
            setattr(req, field, value)
    channel, metadata = _channel(args)
    with channel:
        stub = guard_pb2_grpc.GuardServiceStub(channel)
        try:
            resp = stub.Guard(req, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    if args.json:
        print(json_format.MessageToJson(resp, preserving_proto_field_name=True))
    else:
        print(format_response(resp, show_paths=args.show_paths))
    return 0


def format_response(resp, show_paths: bool = False) -> str:
    """A human-readable rendering of a GuardResponse."""
    from server.pb import guard_pb2 as pb

    decision = pb.Decision.Name(resp.decision).removeprefix("DECISION_")
    lines = []
    answer = resp.answer.normalized if resp.HasField("answer") else "(none)"
    head = f"{decision}  answer={answer}  confidence={resp.confidence:.2f}"
    if resp.decision == pb.DECISION_ABSTAIN:
        head += f"  reason={pb.AbstainReason.Name(resp.abstain_reason).removeprefix('ABSTAIN_REASON_')}"
    lines.append(head)
    if resp.decision != pb.DECISION_RAW:
        lines.append(
            f"region={pb.Region.Name(resp.region).removeprefix('REGION_')}  scorer={resp.scorer}  "
            f"vote_share={resp.vote_share:.2f}  threshold={resp.threshold:.2f}  "
            f"ars={pb.ArsSource.Name(resp.ars_source).removeprefix('ARS_SOURCE_')}"
            + (f" ({resp.ars_error})" if resp.ars_error else "")
        )
    if resp.features:
        lines.append("features: " + "  ".join(f"{k}={v:.2f}" for k, v in sorted(resp.features.items())))
    arm = pb.Arm.Name(resp.arm).removeprefix("ARM_").lower() if resp.arm else ""
    lines.append(f"model={resp.model}  request_id={resp.request_id}" + (f"  arm={arm}" if arm else ""))
    lines.append("")
    lines.append(f"{'path':>4}  {'answer':<14} {'score':>6} {'support':>7} {'FFS':>4} {'tokens':>6}  win")
    for p in resp.paths:
        ans = p.answer.normalized if p.HasField("answer") else "-"
        ffs = str(p.first_failure_step) if p.first_failure_step else "-"
        lines.append(
            f"{p.index:>4}  {ans[:14]:<14} {p.score:>6.2f} {p.support:>7.2f} {ffs:>4} {p.num_tokens:>6}  "
            + ("*" if p.in_winning_cluster else "")
        )
        if show_paths and p.text:
            lines.extend("        | " + t for t in p.text.strip().splitlines())
    if resp.sub_questions:
        lines.append("")
        lines.append("Auxiliary Reasoning Set:")
        lines.append(f"{'#':>3}  {'mode':<10} {'agree':>5} {'soft':>5}  sub-question / per-path answers")
        for k, row in enumerate(resp.sub_questions, 1):
            lines.append(f"{k:>3}  {row.modal_answer[:10] or '-':<10} {row.agreement:>5.2f} {row.soft_agreement:>5.2f}  "
                         f"{row.sub_question}")
            flags = (f"  answered {row.answered}/{len(row.path_answers)}  final answer {row.echo_paths}  "
                     f"path value {row.from_path_values}" + ("  ECHO (not counted)" if row.echo else ""))
            lines.append(f"{'':>28}[{', '.join(a or '-' for a in row.path_answers)}]{flags}")
    lines.append("")
    lines.append("timings (ms): " + "  ".join(f"{t.stage}={t.duration_ms:.0f}" for t in resp.timings))
    lines.append(
        "tokens: "
        + "  ".join(f"{u.phase}={u.prompt_tokens}p/{u.generated_tokens}g/{u.cached_prompt_tokens}c" for u in resp.usage)
    )
    for note in resp.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format

    from server.pb import guard_pb2 as pb
    from server.pb import guard_pb2_grpc

    channel, metadata = _channel(args)
    with channel:
        try:
            resp = guard_pb2_grpc.GuardServiceStub(channel).GetInfo(
                pb.GetInfoRequest(), timeout=args.timeout, metadata=metadata
            )
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(json_format.MessageToJson(resp, preserving_proto_field_name=True))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from guard import replay
    from guard.certify import certify
    from guard.policy import Policy

    record_sets = []
    for path in args.data:
        loaded = replay.load(Path(path))
        if not loaded:
            print(f"error: no records in {path} (make them with benchmarks/quality.py)", file=sys.stderr)
            return 1
        record_sets.append(loaded.values())
    try:
        records = replay.merge(record_sets)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    base = Policy.load(args.base_policy) if args.base_policy else Policy()
    cert = certify(
        records, args.scorer, base, target_risk=args.target_risk, delta=args.delta, fit_fraction=args.fit_fraction,
        seed=args.seed, splits=args.splits, fit_all=args.fit_all,
    )
    cert.summary["data"] = [str(p) for p in args.data]
    cert.policy.dump(args.out, calibration=cert.summary)
    print(json.dumps(cert.summary, indent=2))
    if not cert.result.feasible:
        print(f"warning: no threshold keeps risk under {args.target_risk} at delta {args.delta}; "
              "the policy abstains on everything for this scorer", file=sys.stderr)
    print(f"policy written to {args.out}")
    return 0


def _export_traces(args: argparse.Namespace) -> int:
    from server.export_traces import ExportFilter, export_traces

    filt = ExportFilter(
        min_support=args.min_support, min_confidence=args.min_confidence,
        regions=tuple(r.strip() for r in args.regions.split(",") if r.strip()),
    )
    stats = export_traces([Path(p) for p in args.log], Path(args.out), filt)
    print(json.dumps(stats, indent=2))
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from server.model_registry import UnknownModelError
    from server.model_store import ModelFetchError, ensure_model

    try:
        print(ensure_model(args.name, Path(args.dir) if args.dir else None))
    except (UnknownModelError, ModelFetchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _build_vision_model(args: argparse.Namespace) -> int:
    from server.vision_model import ensure_vision_model

    print(ensure_vision_model(Path(args.out) if args.out else None, force=args.force))
    return 0


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="bearer token (default: $TRACE_GUARD_AUTH_TOKEN)")
    p.add_argument("--tls-ca", help="CA certificate (PEM) to verify the sidecar: enables TLS")
    p.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", help="client key (PEM) for mutual TLS")


def build_parser() -> argparse.ArgumentParser:
    from guard.params import Defaults, ScoreMode
    from guard.prompts import ProbeFormat
    from server.model_registry import FALLBACK_MODEL, MODELS, SERVE_DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="trace-guard", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("TRACE_GUARD_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gRPC sidecar (in-process vLLM engine, or --upstream vLLM servers)")
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
    s.add_argument("--guard-fraction", type=float, default=None,
                   help="A/B split: share of requests (stable hash of ab_key or request_id) served guarded; the "
                        "rest get one raw sample (default: 1, or 0 with --mode raw)")
    s.add_argument("--shadow", action="store_true",
                   help="requests outside the guarded arm get the raw answer at raw latency and are guarded in the "
                        "background; both outcomes go to the decision log")
    s.add_argument("--shadow-max-pending", type=int, default=32, help="shadow runs waiting or running; more are dropped")
    s.add_argument("--shadow-max-concurrent", type=int, default=2, help="shadow runs using the engine at once")
    s.add_argument("--decision-log", metavar="PATH",
                   help="append one JSON line per decision (arm, raw and guarded outcome, ARS table, paths with "
                        "their text, timings) to PATH; holds request text")
    s.add_argument("--decision-log-max-bytes", type=int, default=64 * 1024 * 1024, help="rotate the log past this size")
    s.add_argument("--decision-log-backups", type=int, default=5, help="rotated files kept (PATH.1 ... PATH.N)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=50051, help="gRPC port (0: a free port)")
    s.add_argument("--metrics-port", type=int, default=9464, help="Prometheus port (0: a free port, -1: off)")
    s.add_argument("--port-file", help="write the bound ports as JSON to this file")
    s.add_argument("--num-paths", type=int, default=8)
    s.add_argument("--max-num-paths", type=int, default=64)
    s.add_argument("--temperature", type=float, default=0.7)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--max-tokens", type=int, default=256)
    s.add_argument("--mode", choices=["guard", "raw"], default="guard")
    s.add_argument("--scorer", choices=SCORER_NAMES, default="majority")
    s.add_argument("--score-mode", choices=[m.value for m in ScoreMode], default=Defaults.score_mode.value,
                   help="trace scorer: teacher-force every candidate (full), only contested sub-questions "
                   "(contested), or none (hard agreement only)")
    s.add_argument("--probe-max-tokens", type=int,
                   help="token limit of one sub-question probe; a probe cut at it counts as unanswered")
    s.add_argument("--probe-format", choices=[f.value for f in ProbeFormat], default=ProbeFormat.LEGACY.value,
                   help="continue: probes continue each path's own prompt and text up to its answer line (the "
                        "prefix cache serves them; the final answer is out of view); legacy: the path's whole "
                        "text under a probe header of its own")
    s.add_argument("--ars-retry-samples", type=int, default=4,
                   help="when the greedy sub-question set is unusable, sample this many more in one call "
                        "(0: no retry)")
    s.add_argument("--policy", help="policy JSON file (from `trace-guard calibrate`)")
    s.add_argument("--prompt-style", choices=["fewshot", "chat"], default="fewshot",
                   help="fewshot completion prompt (best for small models) or the model's chat template")
    s.add_argument("--max-model-len", type=int, default=2048)
    s.add_argument("--block-size", type=int, default=32,
                   help="KV-cache block size; prefix-cache hits are whole blocks (CPU: a multiple of 32)")
    s.add_argument("--no-enforce-eager", action="store_true", help="allow torch.compile / CUDA graphs (slow start)")
    s.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weights/activations dtype (auto: vLLM's choice; on CPU bf16, whose greedy outputs can "
                        "change with batch composition; float32 is batch-invariant)")
    s.add_argument("--max-concurrent", type=int, default=8, help="requests processed at once")
    s.add_argument("--max-queued", type=int, default=64, help="requests waiting before RESOURCE_EXHAUSTED")
    s.add_argument("--grace-seconds", type=float, default=30.0, help="drain time on SIGTERM")
    s.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024,
                   help="largest gRPC message accepted or sent")
    s.add_argument("--max-engine-restarts", type=int, default=3,
                   help="restart a dead engine in-process this many times, then exit non-zero (0: never)")
    s.add_argument("--log-request-text", action="store_true",
                   help="log each request's question and answer (off: logs carry ids, decisions, timings)")
    s.add_argument("--auth-token-file", help="require 'authorization: Bearer <token>' (token: first line of "
                   "the file; or set TRACE_GUARD_AUTH_TOKEN)")
    s.add_argument("--auth-protect-health", action="store_true", help="require the token for health checks too")
    s.add_argument("--tls-cert", help="server certificate chain (PEM); enables TLS with --tls-key")
    s.add_argument("--tls-key", help="server private key (PEM)")
    s.add_argument("--tls-client-ca", help="CA (PEM) that client certificates must chain to: mutual TLS")
    s.set_defaults(func=_serve)

    a = sub.add_parser("ask", help="send one question to a running sidecar")
    a.add_argument("question")
    a.add_argument("--address", default=DEFAULT_ADDRESS, help="sidecar address (default: %(default)s)")
    a.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    a.add_argument("--sub-question", action="append", default=[], help="sub-question of the ARS (repeatable)")
    a.add_argument("--paths", type=int, help="number of reasoning paths")
    a.add_argument("--temperature", type=float)
    a.add_argument("--max-tokens", type=int)
    a.add_argument("--seed", type=int)
    a.add_argument("--budget-ms", type=int, help="latency budget: skip or cut short probing/scoring past it")
    a.add_argument("--scorer", choices=SCORER_NAMES)
    a.add_argument("--score-mode", choices=[m.value for m in ScoreMode], help="trace scoring: full, contested, hard")
    a.add_argument("--system-prompt")
    a.add_argument("--raw", action="store_true", help="one unguarded sample (the A/B baseline)")
    a.add_argument("--arm", choices=["guard", "raw", "shadow"], help="force the A/B arm")
    a.add_argument("--ab-key", help="key the A/B split hashes (e.g. a user id)")
    a.add_argument("--show-paths", action="store_true", help="print each path's text")
    a.add_argument("--json", action="store_true", help="print the response as JSON")
    a.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    _client_args(a)
    a.set_defaults(func=_ask)

    i = sub.add_parser("info", help="show the sidecar's model, defaults and limits")
    i.add_argument("--address", default=DEFAULT_ADDRESS)
    i.add_argument("--timeout", type=float, default=10.0)
    _client_args(i)
    i.set_defaults(func=_info)

    c = sub.add_parser("calibrate", help="fit the acceptance threshold to a target risk on labelled records")
    c.add_argument("--data", action="append", required=True,
                   help="records JSONL written by benchmarks/quality.py (repeatable)")
    c.add_argument("--scorer", choices=SCORER_NAMES, default="trace")
    c.add_argument("--target-risk", type=float, required=True, help="error rate allowed among accepted answers")
    c.add_argument("--delta", type=float, default=0.1, help="allowed probability of exceeding the target")
    c.add_argument("--fit-fraction", type=float, default=0.5, help="share of items used to fit; the rest is held out")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--splits", type=int, default=1,
                   help="also refit on this many random splits and report how often held-out risk meets the target")
    c.add_argument("--fit-all", action="store_true",
                   help="certify on every record (same guarantee, more power; no held-out estimate)")
    c.add_argument("--base-policy", help="policy file whose other settings are kept")
    c.add_argument("--out", default="policy.json")
    c.set_defaults(func=_calibrate)

    x = sub.add_parser("export-traces", help="turn accepted, well-supported paths of a decision log into a "
                                             "JSONL training set")
    x.add_argument("--log", action="append", required=True,
                   help="decision log (its rotated files PATH.1 ... are read too; repeatable)")
    x.add_argument("--out", required=True, help="training-set JSONL to write")
    x.add_argument("--min-support", type=float, default=0.8, help="smallest ARS support a path needs")
    x.add_argument("--min-confidence", type=float, default=0.0, help="smallest decision confidence")
    x.add_argument("--regions", default="reliable", help="comma-separated regions to keep (default: reliable)")
    x.set_defaults(func=_export_traces)

    f = sub.add_parser("fetch-model", help="download, verify and convert a registered model once")
    f.add_argument("--name", choices=sorted(MODELS), default=SERVE_DEFAULT_MODEL,
                   help="which model (default: %(default)s, the one `serve` runs)")
    f.add_argument("--dir", help="target directory (default: its directory under models/ or $TRACE_GUARD_MODELS_DIR)")
    f.set_defaults(func=_fetch_model)

    v = sub.add_parser("build-vision-model",
                       help="build the tiny plumbing VLM for image tests (random vision tower: meaningless answers)")
    v.add_argument("--out", help="target directory (default: models/trace-guard-tiny-vlm)")
    v.add_argument("--force", action="store_true", help="rebuild even if a build is cached")
    v.set_defaults(func=_build_vision_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
