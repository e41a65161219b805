"""Container health check: exit 0 when the sidecar's gRPC health service says SERVING, else 1.

Docker's HEALTHCHECK runs this inside the container (Kubernetes uses its native gRPC probe instead).
It needs only grpcio and grpcio-health-checking, both trace-guard dependencies. Plaintext only:
with --tls-cert the container health check cannot connect; rely on the orchestrator's probe.

    grpc_health_check.py [ADDRESS] [--service NAME] [--timeout SECONDS]

ADDRESS defaults to $TRACE_GUARD_HEALTH_ADDRESS, else 127.0.0.1:50051 (the `serve --port` default).
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_ADDRESS = "127.0.0.1:50051"


def check(address: str, service: str = "", timeout_seconds: float = 3.0) -> tuple[bool, str]:
    """(serving, status name or error) for one Health/Check call."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds
            )
        except grpc.RpcError as err:
            return False, f"{err.code().name}: {err.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    return resp.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", default=os.environ.get("TRACE_GUARD_HEALTH_ADDRESS", DEFAULT_ADDRESS))
    parser.add_argument("--service", default="", help="health service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    args = parser.parse_args(argv)
    serving, status = check(args.address, args.service, args.timeout)
    print(f"{args.address}: {status}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
