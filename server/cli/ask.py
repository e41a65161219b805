"""`trace-guard ask` and `trace-guard info`: a gRPC client of a running sidecar."""

from __future__ import annotations

import argparse
import mimetypes
import os
import sys
from pathlib import Path

from guard.params import ScoreMode
from guard.scorers import SCORER_NAMES
from server.arms import Arm

DEFAULT_ADDRESS = os.environ.get("TRACE_GUARD_ADDRESS", "127.0.0.1:50051")

# `ask` flags that set an optional GuardRequest field of another name when given.
_REQUEST_FIELDS = {"paths": "num_paths", "temperature": "temperature", "max_tokens": "max_tokens", "seed": "seed",
                   "budget_ms": "latency_budget_ms", "adaptive": "adaptive", "min_paths": "min_paths",
                   "stop_level": "stop_level", "confidence_abort": "confidence_abort",
                   "max_total_tokens": "max_total_tokens"}


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="bearer token (default: $TRACE_GUARD_AUTH_TOKEN)")
    p.add_argument("--tls-ca", help="CA certificate (PEM) to verify the sidecar: enables TLS")
    p.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", help="client key (PEM) for mutual TLS")


def add_ask_parser(sub) -> None:
    a = sub.add_parser("ask", help="send one question to a running sidecar")
    a.add_argument("question")
    a.add_argument("--address", default=DEFAULT_ADDRESS, help="sidecar address (default: %(default)s)")
    a.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    a.add_argument("--sub-question", action="append", default=[], help="sub-question of the ARS (repeatable)")
    a.add_argument("--paths", type=int, help="number of reasoning paths")
    a.add_argument("--temperature", type=float)
    a.add_argument("--max-tokens", type=int)
    a.add_argument("--seed", type=int)
    a.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                   help="adaptive sampling: stop once the vote is settled (--paths is then the most paths)")
    a.add_argument("--min-paths", type=int, help="adaptive: never stop before this many paths finished")
    a.add_argument("--stop-level", type=float, help="adaptive: leader's probability of staying the leader to stop")
    a.add_argument("--confidence-abort", action=argparse.BooleanOptionalAction, default=None,
                   help="online DeepConf: abort paths whose token confidence collapses (they do not vote)")
    a.add_argument("--max-total-tokens", type=int,
                   help="token budget: tokens the engine may generate for the request, all phases together")
    a.add_argument("--budget-ms", type=int, help="latency budget: skip or cut short probing/scoring past it")
    a.add_argument("--scorer", choices=SCORER_NAMES)
    a.add_argument("--score-mode", choices=[m.value for m in ScoreMode], help="trace scoring: full, contested, hard")
    a.add_argument("--system-prompt")
    a.add_argument("--raw", action="store_true", help="one unguarded sample (the A/B baseline)")
    a.add_argument("--arm", choices=[arm.value for arm in Arm], help="force the A/B arm")
    a.add_argument("--ab-key", help="key the A/B split hashes (e.g. a user id)")
    a.add_argument("--stream", action="store_true",
                   help="GuardStream: show the first answer at once (provisional), then each path and the verdict, "
                        "which commits or retracts it")
    a.add_argument("--show-paths", action="store_true", help="print each path's text")
    a.add_argument("--json", action="store_true", help="print the response as JSON")
    a.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    _add_client_args(a)
    a.set_defaults(func=run_ask)


def add_info_parser(sub) -> None:
    i = sub.add_parser("info", help="show the sidecar's model, defaults and limits")
    i.add_argument("--address", default=DEFAULT_ADDRESS)
    i.add_argument("--timeout", type=float, default=10.0)
    _add_client_args(i)
    i.set_defaults(func=run_info)


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


def _call(args: argparse.Namespace, method: str, request):
    """One unary call to the sidecar; None (the error printed) when it fails."""
    import grpc

    from server.pb import guard_pb2_grpc

    channel, metadata = _channel(args)
    with channel:
        stub = guard_pb2_grpc.GuardServiceStub(channel)
        try:
            return getattr(stub, method)(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return None


def _print_json(resp) -> None:
    from google.protobuf import json_format

    print(json_format.MessageToJson(resp, preserving_proto_field_name=True))


def _read_image(path: str):
    from server.pb import guard_pb2 as pb

    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return pb.Image(data=Path(path).read_bytes(), mime_type=mime)


def guard_request(args: argparse.Namespace):
    """The GuardRequest the `ask` flags describe (unset flags leave their fields unset)."""
    from server.pb import guard_pb2 as pb

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
    for name, field in _REQUEST_FIELDS.items():
        value = getattr(args, name)
        if value is not None:
            setattr(req, field, value)
    return req


def _stream(args: argparse.Namespace, request) -> int:
    """GuardStream: print each event as it arrives, then the decision and whether it retracts."""
    import grpc

    from server.cli.render import format_event, format_response
    from server.pb import guard_pb2_grpc

    channel, metadata = _channel(args)
    with channel:
        stub = guard_pb2_grpc.GuardServiceStub(channel)
        try:
            for event in stub.GuardStream(request, timeout=args.timeout, metadata=metadata):
                if event.HasField("decision") and args.json:
                    _print_json(event.decision)
                elif event.HasField("decision"):
                    print(format_event(event))
                    print(format_response(event.decision.response, show_paths=args.show_paths))
                elif not args.json:
                    print(format_event(event), flush=True)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from server.cli.render import format_response

    if args.stream:
        return _stream(args, guard_request(args))
    resp = _call(args, "Guard", guard_request(args))
    if resp is None:
        return 1
    if args.json:
        _print_json(resp)
    else:
        print(format_response(resp, show_paths=args.show_paths))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from server.pb import guard_pb2 as pb

    resp = _call(args, "GetInfo", pb.GetInfoRequest())
    if resp is None:
        return 1
    _print_json(resp)
    return 0
