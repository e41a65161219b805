"""The `trace-guard` command: serve the sidecar, ask it a question, show its info, fetch a model."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from server.cli import ask, calibrate, export, models, serve
from server.cli.render import format_response
from server.cli.serve import SERVE_DEFAULT_SCORER, guard_config

__all__ = ["SERVE_DEFAULT_SCORER", "build_parser", "format_response", "guard_config", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trace-guard", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("TRACE_GUARD_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    ask.add_ask_parser(sub)
    ask.add_info_parser(sub)
    calibrate.add_parser(sub)
    export.add_parser(sub)
    models.add_fetch_model_parser(sub)
    models.add_build_vision_model_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
