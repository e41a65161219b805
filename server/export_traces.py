"""`trace-guard export-traces`: accepted, well-supported reasoning paths from decision logs as a training set."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from server.decision_log import log_files

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportFilter:
    """Which paths count as step-verified: the guard accepted the answer, the path is in the winning
    cluster and agrees with the consensus on the sub-questions (support)."""

    min_support: float = 0.8
    min_confidence: float = 0.0
    regions: tuple[str, ...] = ("reliable",)


def read_records(paths: list[Path]) -> Iterator[dict]:
    """Decision records from the logs (rotated files first, oldest to newest); bad lines skipped."""
    for path in paths:
        files = log_files(path)
        if not files:
            raise FileNotFoundError(f"no decision log at {path}")
        for file in files:
            with file.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    try:
                        yield json.loads(line)
                    except ValueError:
                        # A line cut by a crash (never by a graceful shutdown) is skipped.
                        logger.warning("%s:%d is not JSON; skipped", file, lineno)


def examples(record: dict, filt: ExportFilter) -> list[dict]:
    guarded = record.get("guarded")
    if not guarded or guarded.get("decision") != "accept":
        return []
    if guarded.get("region") not in filt.regions or guarded.get("confidence", 0.0) < filt.min_confidence:
        return []
    ars = guarded.get("ars") or []
    out = []
    for path in guarded.get("paths") or []:
        if not path.get("in_winning_cluster") or path.get("support", 0.0) < filt.min_support or not path.get("text"):
            continue
        i = path["index"]
        out.append({
            "question": record.get("question", ""),
            "reasoning": path["text"].strip(),
            "answer": guarded.get("answer"),
            "answer_normalized": guarded.get("answer_normalized"),
            "sub_answers": [
                {"sub_question": row["sub_question"], "answer": row["path_answers"][i] if i < len(row["path_answers"]) else "",
                 "modal_answer": row["modal_answer"], "agreement": row["agreement"]}
                for row in ars
            ],
            "scores": {
                "support": path.get("support"),
                "path_score": path.get("score"),
                "confidence": guarded.get("confidence"),
                "vote_share": guarded.get("vote_share"),
                "region": guarded.get("region"),
                "scorer": guarded.get("scorer"),
            },
            "source": {"request_id": record.get("request_id"), "arm": record.get("arm"), "path_index": i},
        })
    return out


def export_traces(logs: list[Path], out: Path, filt: ExportFilter) -> dict:
    """Write the training set; returns counts (records read, accepted, examples written)."""
    stats = {"records": 0, "accepted": 0, "examples": 0, "duplicates": 0}
    seen: set[tuple[str, str]] = set()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for record in read_records(logs):
            stats["records"] += 1
            if (record.get("guarded") or {}).get("decision") == "accept":
                stats["accepted"] += 1
            for example in examples(record, filt):
                key = (example["question"], example["reasoning"])
                if key in seen:
                    stats["duplicates"] += 1
                    continue
                seen.add(key)
                fh.write(json.dumps(example, ensure_ascii=False) + "\n")
                stats["examples"] += 1
    return stats
