"""`trace-guard fetch-model` and `build-vision-model`: put a model on disk once, ahead of `serve`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_fetch_model_parser(sub) -> None:
    from server.model_registry import MODELS, SERVE_DEFAULT_MODEL

    f = sub.add_parser("fetch-model", help="download, verify and convert a registered model once")
    f.add_argument("--name", choices=sorted(MODELS), default=SERVE_DEFAULT_MODEL,
                   help="which model (default: %(default)s, the one `serve` runs)")
    f.add_argument("--dir", help="target directory (default: its directory under models/ or $TRACE_GUARD_MODELS_DIR)")
    f.set_defaults(func=run_fetch_model)


def add_build_vision_model_parser(sub) -> None:
    v = sub.add_parser("build-vision-model",
                       help="build the tiny plumbing VLM for image tests (random vision tower: meaningless answers)")
    v.add_argument("--out", help="target directory (default: models/trace-guard-tiny-vlm)")
    v.add_argument("--force", action="store_true", help="rebuild even if a build is cached")
    v.set_defaults(func=run_build_vision_model)


def run_fetch_model(args: argparse.Namespace) -> int:
    from server.model_registry import UnknownModelError
    from server.model_store import ModelFetchError, ensure_model

    try:
        print(ensure_model(args.name, Path(args.dir) if args.dir else None))
    except (UnknownModelError, ModelFetchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def run_build_vision_model(args: argparse.Namespace) -> int:
    from server.vision_model import ensure_vision_model

    print(ensure_vision_model(Path(args.out) if args.out else None, force=args.force))
    return 0
