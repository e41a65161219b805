"""The human-readable rendering of a GuardResponse that `trace-guard ask` prints."""

from __future__ import annotations


def _enum_name(enum_type, value: int, prefix: str) -> str:
    return enum_type.Name(value).removeprefix(prefix)


def _header(resp) -> list[str]:
    from server.pb import guard_pb2 as pb

    answer = resp.answer.normalized if resp.HasField("answer") else "(none)"
    head = f"{_enum_name(pb.Decision, resp.decision, 'DECISION_')}  answer={answer}  confidence={resp.confidence:.2f}"
    if resp.decision == pb.DECISION_ABSTAIN:
        head += f"  reason={_enum_name(pb.AbstainReason, resp.abstain_reason, 'ABSTAIN_REASON_')}"
    lines = [head]
    if resp.decision != pb.DECISION_RAW:
        lines.append(
            f"region={_enum_name(pb.Region, resp.region, 'REGION_')}  scorer={resp.scorer}  "
            f"vote_share={resp.vote_share:.2f}  threshold={resp.threshold:.2f}  "
            f"ars={_enum_name(pb.ArsSource, resp.ars_source, 'ARS_SOURCE_')}"
            + (f" ({resp.ars_error})" if resp.ars_error else "")
        )
    if resp.features:
        lines.append("features: " + "  ".join(f"{k}={v:.2f}" for k, v in sorted(resp.features.items())))
    arm = _enum_name(pb.Arm, resp.arm, "ARM_").lower() if resp.arm else ""
    lines.append(f"model={resp.model}  request_id={resp.request_id}" + (f"  arm={arm}" if arm else ""))
    return lines


def _paths_table(resp, show_paths: bool) -> list[str]:
    lines = [f"{'path':>4}  {'answer':<14} {'score':>6} {'support':>7} {'FFS':>4} {'tokens':>6}  win"]
    for p in resp.paths:
        ans = p.answer.normalized if p.HasField("answer") else "-"
        ffs = str(p.first_failure_step) if p.first_failure_step else "-"
        lines.append(
            f"{p.index:>4}  {ans[:14]:<14} {p.score:>6.2f} {p.support:>7.2f} {ffs:>4} {p.num_tokens:>6}  "
            + ("*" if p.in_winning_cluster else "")
        )
        if show_paths and p.text:
            lines.extend("        | " + t for t in p.text.strip().splitlines())
    return lines


def _ars_table(resp) -> list[str]:
    if not resp.sub_questions:
        return []
    lines = ["", "Auxiliary Reasoning Set:",
             f"{'#':>3}  {'mode':<10} {'agree':>5} {'soft':>5}  sub-question / per-path answers"]
    for k, row in enumerate(resp.sub_questions, 1):
        lines.append(f"{k:>3}  {row.modal_answer[:10] or '-':<10} {row.agreement:>5.2f} {row.soft_agreement:>5.2f}  "
                     f"{row.sub_question}")
        flags = (f"  answered {row.answered}/{len(row.path_answers)}  final answer {row.echo_paths}  "
                 f"path value {row.from_path_values}" + ("  ECHO (not counted)" if row.echo else "")
                 + ("  not probed: restates the question" if row.not_probed else ""))
        lines.append(f"{'':>28}[{', '.join(a or '-' for a in row.path_answers)}]{flags}")
    return lines


def _costs(resp) -> list[str]:
    return [
        "",
        "timings (ms): " + "  ".join(f"{t.stage}={t.duration_ms:.0f}" for t in resp.timings),
        "tokens: " + "  ".join(
            f"{u.phase}={u.prompt_tokens}p/{u.generated_tokens}g/{u.cached_prompt_tokens}c" for u in resp.usage
        ),
        *_sampling(resp),
        *(f"note: {note}" for note in resp.notes),
    ]


def _sampling(resp) -> list[str]:
    s = resp.sampling
    lines = []
    if s.adaptive:
        lines.append(f"sampling: adaptive, {s.stop_reason} after {s.finished} of {s.max_paths} paths "
                     f"(P(leader stays) {s.leader_probability:.3f}; {s.aborted} aborted, {s.not_started} not started)")
    if s.HasField("confidence_threshold") or s.aborted_low_confidence:
        threshold = f"{s.confidence_threshold:.3f}" if s.HasField("confidence_threshold") else "not set"
        lines.append(f"confidence abort: {s.aborted_low_confidence} path(s) aborted (threshold {threshold})")
    return lines


def format_response(resp, show_paths: bool = False) -> str:
    """A human-readable rendering of a GuardResponse."""
    return "\n".join([*_header(resp), "", *_paths_table(resp, show_paths), *_ars_table(resp), *_costs(resp)])


def _answer_text(answer) -> str:
    return answer.raw or answer.normalized or "-"


def format_event(event) -> str:
    """One line per GuardStream event."""
    t = f"[{event.elapsed_ms / 1e3:6.2f}s]"
    kind = event.WhichOneof("event")
    if kind == "provisional":
        return f"{t} provisional answer: {_answer_text(event.provisional.answer)} (path {event.provisional.path_index})"
    if kind == "path":
        p = event.path
        if p.aborted:
            return f"{t} path {p.index} aborted: confidence collapsed after {p.num_tokens} tokens (does not vote)"
        answer = _answer_text(p.answer) if p.HasField("answer") else "no answer"
        return f"{t} path {p.index} finished: {answer} ({p.num_tokens} tokens, {p.finish_reason})"
    if kind == "ars":
        return f"{t} sub-questions: " + " | ".join(event.ars.sub_questions)
    if kind == "progress":
        g = event.progress
        leader = _answer_text(g.leader) if g.HasField("leader") else "-"
        ended = f" (sampling ended: {g.stop_reason})" if g.stop_reason else ""
        return f"{t} {g.stage}: leader {leader} with {g.vote_share:.0%} of {g.paths_finished} paths{ended}"
    d = event.decision
    verdict = f"RETRACTED ({d.retract_reason})" if d.retracted else "COMMITTED"
    return f"{t} decision: {verdict}"
