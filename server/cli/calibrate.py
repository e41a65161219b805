"""`trace-guard calibrate`: fit a policy's acceptance threshold to a target risk on recorded samples."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guard.params import Defaults
from guard.scorers import SCORER_NAMES


def add_parser(sub) -> None:
    c = sub.add_parser("calibrate", help="fit the acceptance threshold to a target risk on labelled records")
    c.add_argument("--data", action="append", required=True,
                   help="records JSONL written by benchmarks/quality.py (repeatable)")
    c.add_argument("--scorer", choices=SCORER_NAMES, default=Defaults.scorer)
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
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
