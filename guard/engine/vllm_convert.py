"""Conversions between the guard's engine types and vLLM's: SamplingParams in, RequestOutput log-probs out."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from guard.engine.base import Completion, GenerationResult, SampleSpec
from guard.engine.tokens import top_k
from guard.errors import InvalidArgumentError

if TYPE_CHECKING:
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.sampling_params import SamplingParams


def sampling_params(spec: SampleSpec, streamed: bool = False) -> SamplingParams:
    """vLLM's parameters for `spec`; `streamed`: an output after every step (all tokens so far), else
    only the finished request."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    kwargs: dict[str, Any] = {
        "n": spec.n,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "max_tokens": spec.max_tokens,
        "seed": spec.seed,
        "stop": list(spec.stop) or None,
        "logprobs": spec.logprobs,
        "output_kind": RequestOutputKind.CUMULATIVE if streamed else RequestOutputKind.FINAL_ONLY,
    }
    if spec.json_schema is not None:
        kwargs["structured_outputs"] = StructuredOutputsParams(json=spec.json_schema)
    try:
        return SamplingParams(**kwargs)
    except Exception as exc:
        raise InvalidArgumentError("sample_spec", str(exc)) from exc


def scoring_params(*, read_cache: bool, next_token_id: int | None = None) -> SamplingParams:
    """A one-token request that returns the log-prob of each actual prompt token.

    `next_token_id`: also the log-prob of that token right after the prompt."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": 0.0,
        "max_tokens": 1,
        # 0 = only the logprob of each actual prompt token.
        "prompt_logprobs": 0,
        # vLLM skips reading the prefix cache whenever prompt logprobs are asked for, unless told.
        "skip_reading_prefix_cache": not read_cache,
        "detokenize": False,
        "output_kind": RequestOutputKind.FINAL_ONLY,
    }
    if next_token_id is not None:
        kwargs["logprob_token_ids"] = [next_token_id]
    return SamplingParams(**kwargs)


def prompt_logprob(prompt_logprobs: Any, pos: int, token: int) -> float | None:
    """Log-prob of `token` at prompt position `pos`; None where vLLM computed none (cached positions)."""
    entry = prompt_logprobs[pos] if prompt_logprobs is not None and pos < len(prompt_logprobs) else None
    lp = entry.get(token) if entry is not None else None
    return None if lp is None else float(lp.logprob)


def top_logprobs(c: CompletionOutput, spec: SampleSpec, start: int = 0) -> list[list[float]]:
    """Top-k log-probs of each generated token from position `start` on (DeepConf token confidence)."""
    if not spec.logprobs or c.logprobs is None:
        return []
    return [top_k((float(lp.logprob) for lp in pos.values()), spec.logprobs)
            for pos in c.logprobs[start:] if pos is not None]


def to_completion(c: CompletionOutput, spec: SampleSpec) -> Completion:
    token_ids = list(c.token_ids)
    token_lps: list[float] = []
    if spec.logprobs is not None and c.logprobs is not None:
        for tok, pos in zip(token_ids, c.logprobs):
            if pos is None:
                continue
            chosen = pos.get(tok)
            token_lps.append(float(chosen.logprob) if chosen is not None else math.nan)
    return Completion(
        text=c.text,
        num_tokens=len(token_ids),
        finish_reason=c.finish_reason,
        token_logprobs=token_lps,
        top_logprobs=top_logprobs(c, spec),
    )


def to_generation_result(out: RequestOutput, spec: SampleSpec) -> GenerationResult:
    return GenerationResult(
        completions=[to_completion(c, spec) for c in sorted(out.outputs, key=lambda c: c.index)],
        prompt_tokens=len(out.prompt_token_ids or ()),
        cached_prompt_tokens=int(out.num_cached_tokens or 0),
    )
