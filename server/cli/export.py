"""`trace-guard export-traces`: accepted, well-supported paths of a decision log as a training set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    x = sub.add_parser("export-traces", help="turn accepted, well-supported paths of a decision log into a "
                                             "JSONL training set")
    x.add_argument("--log", action="append", required=True,
                   help="decision log (its rotated files PATH.1 ... are read too; repeatable)")
    x.add_argument("--out", required=True, help="training-set JSONL to write")
    x.add_argument("--min-support", type=float, default=0.8, help="smallest ARS support a path needs")
    x.add_argument("--min-confidence", type=float, default=0.0, help="smallest decision confidence")
    x.add_argument("--regions", default="reliable", help="comma-separated regions to keep (default: reliable)")
    x.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.export_traces import ExportFilter, export_traces

    filt = ExportFilter(
        min_support=args.min_support, min_confidence=args.min_confidence,
        regions=tuple(r.strip() for r in args.regions.split(",") if r.strip()),
    )
    stats = export_traces([Path(p) for p in args.log], Path(args.out), filt)
    print(json.dumps(stats, indent=2))
    return 0
