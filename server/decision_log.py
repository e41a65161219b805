"""The decision log: one JSON line per decided request, written by one background thread, rotated by size."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from guard.result import GuardResult

logger = logging.getLogger(__name__)

_STOP = object()


class DecisionLog:
    """Appends records to `path`; past `max_bytes` the file becomes `path.1` (`path.1` -> `path.2` ...,
    keeping `backups` old files).

    `submit` never blocks the caller: records go to a bounded queue that one writer thread drains.
    Every record `submit` accepted is on disk after `close()` (which a graceful shutdown calls); a
    full queue refuses the record, counts it in `dropped` and returns False.
    """

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = 64 * 1024 * 1024, backups: int = 5,
                 max_pending: int = 10_000, flush_interval_seconds: float = 1.0):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.flush_interval_seconds = flush_interval_seconds
        self.written = 0
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(max_pending)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> bool:
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything accepted so far, flush, fsync and stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("decision log writer did not finish within %ss", timeout)

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.flush_interval_seconds)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                self._write(item)
            if time.monotonic() - last_flush >= self.flush_interval_seconds:
                self._file.flush()
                last_flush = time.monotonic()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def _write(self, record: dict[str, Any]) -> None:
        try:
            line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        except (TypeError, ValueError):
            logger.exception("decision record %s is not serialisable", record.get("request_id"))
            return
        if self._file.tell() + len(line) > self.max_bytes and self._file.tell() > 0:
            self._rotate()
        self._file.write(line)
        self.written += 1

    def _rotate(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = self.path.open("a", encoding="utf-8")


def log_files(path: str | os.PathLike) -> list[Path]:
    """The log and its rotated files, oldest first."""
    path = Path(path)
    rotated = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    rotated.sort(key=lambda p: int(p.suffix[1:]), reverse=True)  # PATH.N is the oldest
    return rotated + ([path] if path.exists() else [])


def outcome_record(result: GuardResult) -> dict[str, Any]:
    """What the log keeps of one pipeline run (guarded or raw)."""
    return {
        "mode": result.mode.value,
        "decision": result.decision.value,
        "answer": result.answer.raw if result.answer else None,
        "answer_normalized": result.answer.normalized if result.answer else None,
        "confidence": result.confidence,
        "threshold": result.threshold,
        "region": result.region.value if result.region else None,
        "abstain_reason": result.abstain_reason.value if result.abstain_reason else None,
        "scorer": result.scorer,
        "vote_share": result.vote_share,
        "ars_source": result.ars_source.value,
        "ars": [
            {"sub_question": s.sub_question, "modal_answer": s.modal_answer, "agreement": s.agreement,
             "soft_agreement": s.soft_agreement, "path_answers": s.path_answers, "answered": s.answered,
             "echo": s.echo, "echo_paths": s.echo_paths, "from_path_values": s.from_path_values,
             "path_answer_sources": [src.value if src else None for src in s.path_answer_sources],
             "probed": s.probed}
            for s in result.sub_questions
        ],
        "paths": [
            {"index": p.index, "answer": p.answer.normalized if p.answer else None, "support": p.support,
             "score": p.score, "first_failure_step": p.first_failure_step, "in_winning_cluster": p.in_winning_cluster,
             "finish_reason": p.finish_reason, "num_tokens": p.num_tokens, "text": p.text,
             "path_values": p.path_values}
            for p in result.paths
        ],
        "timings_ms": result.timings_ms,
        "degraded_stages": result.degraded_stages,
    }


def decision_record(
    request_id: str, arm: str, assignment: str, question: str, *,
    raw: GuardResult | None = None, guarded: GuardResult | None = None, shadow_status: str | None = None,
) -> dict[str, Any]:
    """One line of the decision log: the caller-facing outcome and, in shadow mode, the guard's."""
    record: dict[str, Any] = {
        "ts": time.time(),
        "request_id": request_id,
        "arm": arm,
        "assignment": assignment,
        "question": question,
        "raw": outcome_record(raw) if raw is not None else None,
        "guarded": outcome_record(guarded) if guarded is not None else None,
    }
    if shadow_status is not None:
        record["shadow_status"] = shadow_status
    return record
