"""Do `trace`'s soft scores earn their stage? Recorded runs re-scored with and without them.

A quality run records each path's soft distribution over a sub-question's candidates (the `score`
stage, `score_mode` contested or full). Dropping them leaves hard agreement, which is what
`score_mode` hard computes, so the two modes compare on the same paths and probe answers without
sampling again. Reports, over all problems of the given record sets, `trace`'s AUROC with and without
soft scores and their paired difference (95% paired bootstrap), and how many requests each accepts
at the policy's threshold and how many of those are right:

    python -m benchmarks.soft_scores benchmarks/out/verdict-ars benchmarks/out/verdict-model-ars
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.metrics import auroc
from benchmarks.stats import paired_bootstrap
from guard import replay
from guard.policy import Policy

MODES = ("soft", "hard")


def without_soft(record: replay.Record) -> replay.Record:
    """The record as `score_mode` hard would have scored it: no soft distributions."""
    return dataclasses.replace(record, soft=None)


def load_runs(dirs: Sequence[Path]) -> dict[str, replay.Record]:
    """Every record of every run directory, keyed by run and problem (the same problem in two runs stays two)."""
    records: dict[str, replay.Record] = {}
    for d in dirs:
        for path in sorted(d.glob("records-*.jsonl")):
            for pid, rec in replay.load(path).items():
                records[f"{d.name}:{pid}"] = rec
    return records


def compare(records: Sequence[replay.Record], policy: Policy, resamples: int = 1000, seed: int = 0) -> dict:
    """`trace` with the recorded soft scores against hard agreement, on the same records."""
    outcomes = {
        "soft": [replay.rescore(r, "trace", policy) for r in records],
        "hard": [replay.rescore(without_soft(r), "trace", policy) for r in records],
    }
    conf = {m: np.array([o.gated_confidence for o in outs]) for m, outs in outcomes.items()}
    right = {m: np.array([o.correct for o in outs], dtype=bool) for m, outs in outcomes.items()}
    accepted = {m: np.array([o.accepted for o in outs], dtype=bool) for m, outs in outcomes.items()}

    def stats(idx: np.ndarray) -> dict[str, float]:
        # A gate's abstention (-inf) ranks below every confidence; one class gives nan.
        a = {m: auroc(list(conf[m][idx]), list(right[m][idx])) for m in MODES}
        return {"auroc_soft": a["soft"], "auroc_hard": a["hard"], "auroc_hard_minus_soft": a["hard"] - a["soft"]}

    ci = paired_bootstrap(len(records), stats, resamples, seed=seed)
    return {
        "problems": len(records),
        "with_soft_scores": sum(bool(r.soft) and any(x is not None for row in r.soft for x in row) for r in records),
        **{k: (v.estimate, v.low, v.high) for k, v in ci.items()},
        **{f"accepted_{m}": int(accepted[m].sum()) for m in MODES},
        **{f"right_among_accepted_{m}": int((accepted[m] & right[m]).sum()) for m in MODES},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="quality run directories (their records-*.jsonl)")
    p.add_argument("--resamples", type=int, default=1000)
    args = p.parse_args(argv)
    records = load_runs(args.runs)
    if not records:
        p.error("no records-*.jsonl in the given directories")
    out = compare(list(records.values()), Policy(), args.resamples)
    print(f"{out['problems']} problems ({out['with_soft_scores']} with soft scores); trace AUROC, 95% paired bootstrap")
    for key in ("auroc_soft", "auroc_hard", "auroc_hard_minus_soft"):
        est, low, high = out[key]
        print(f"  {key:24s} {est:+.3f} [{low:+.3f}, {high:+.3f}]")
    for m in MODES:
        print(f"  {m}: accepted {out[f'accepted_{m}']}, right among them {out[f'right_among_accepted_{m}']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
