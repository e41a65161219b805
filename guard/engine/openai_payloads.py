"""Request bodies for, and parsing of the answers of, a vLLM OpenAI-compatible server."""

from __future__ import annotations

import base64
import io
import weakref
from typing import Any

from guard.engine.base import Completion, SampleSpec, ScoreResult
from guard.engine.tokens import top_k
from guard.errors import EngineError

# Renders the one text part verbatim: the sidecar has already applied the model's own template.
PASS_THROUGH_TEMPLATE = (
    "{%- for message in messages -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}{%- endfor -%}"
)


def completion_body(model: str, spec: SampleSpec) -> dict[str, Any]:
    """A /v1/completions body for `spec`, without the prompt."""
    body: dict[str, Any] = {
        "model": model,
        "n": spec.n,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "max_tokens": spec.max_tokens,
        # The prompt is fully rendered (template applied): no extra BOS, as in-process.
        "add_special_tokens": False,
        "return_token_ids": True,
    }
    if spec.seed is not None:
        body["seed"] = spec.seed
    if spec.stop:
        body["stop"] = list(spec.stop)
    if spec.logprobs is not None:
        body["logprobs"] = spec.logprobs
        body["return_tokens_as_token_ids"] = True
    if spec.json_schema is not None:
        body["structured_outputs"] = {"json": spec.json_schema}
    return body


def chat_completion_body(model: str, spec: SampleSpec) -> dict[str, Any]:
    """A /v1/chat/completions body for `spec`, without the messages (see `chat_fields`)."""
    body = completion_body(model, spec)
    if spec.logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = spec.logprobs
        body.pop("return_tokens_as_token_ids", None)
    return body


def scoring_body(model: str) -> dict[str, Any]:
    """A one-token request that returns the log-prob of each actual prompt token, without the prompt."""
    # prompt_logprobs 0: only the logprob of each actual prompt token.
    return {"model": model, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0, "return_token_ids": True}


def chat_fields(image_urls: list[str], text: str) -> dict[str, Any]:
    """The images and the already rendered text as one user message, through a pass-through template."""
    parts: list[dict] = [{"type": "image_url", "image_url": {"url": u}} for u in image_urls]
    parts.append({"type": "text", "text": text})
    return {
        "messages": [{"role": "user", "content": parts}],
        "chat_template": PASS_THROUGH_TEMPLATE,
        "add_generation_prompt": False,
    }


def sorted_choices(out: dict) -> list[dict]:
    return sorted(out.get("choices") or [], key=lambda c: c["index"])


def usage(out: dict) -> tuple[int, int]:
    """(prompt tokens, cached prompt tokens) of a whole call."""
    counts = out.get("usage") or {}
    details = counts.get("prompt_tokens_details") or {}
    return int(counts.get("prompt_tokens") or 0), int(details.get("cached_tokens") or 0)


def parse_completion(choice: dict, spec: SampleSpec) -> Completion:
    """One /v1/completions choice."""
    token_ids = choice.get("token_ids") or []
    token_lps: list[float] = []
    top_lps: list[list[float]] = []
    logprobs = choice.get("logprobs")
    if spec.logprobs is not None and logprobs:
        token_lps = [float("nan") if lp is None else float(lp) for lp in logprobs.get("token_logprobs") or []]
        if spec.logprobs > 0:
            for alternatives in logprobs.get("top_logprobs") or []:
                top_lps.append(top_k((float(v) for v in (alternatives or {}).values()), spec.logprobs))
    return Completion(
        text=choice.get("text") or "",
        num_tokens=len(token_ids) if token_ids else len(token_lps),
        finish_reason=choice.get("finish_reason"),
        token_logprobs=token_lps,
        top_logprobs=top_lps,
    )


def parse_chat_completion(choice: dict, spec: SampleSpec) -> Completion:
    """One /v1/chat/completions choice."""
    token_lps: list[float] = []
    top_lps: list[list[float]] = []
    entries = ((choice.get("logprobs") or {}).get("content")) or []
    if spec.logprobs is not None:
        for entry in entries:
            token_lps.append(float(entry.get("logprob", float("nan"))))
            if spec.logprobs > 0:
                top_lps.append(top_k((float(t["logprob"]) for t in entry.get("top_logprobs") or []), spec.logprobs))
    token_ids = choice.get("token_ids") or []
    return Completion(
        text=(choice.get("message") or {}).get("content") or "",
        num_tokens=len(token_ids) if token_ids else len(entries),
        finish_reason=choice.get("finish_reason"),
        token_logprobs=token_lps,
        top_logprobs=top_lps,
    )


def parse_score(choice: dict, ctx: list[int], cont: list[int]) -> ScoreResult:
    """Sum of the continuation's prompt log-probs in a scoring answer (`choice` carries prompt_logprobs)."""
    prompt_ids = ctx + cont
    k = len(cont)
    if k == 0:
        return ScoreResult(logprob_sum=0.0, num_tokens=0, prompt_tokens=len(prompt_ids))
    plps = choice.get("prompt_logprobs")
    if not isinstance(plps, list) or len(plps) != len(prompt_ids):
        raise EngineError("upstream returned prompt logprobs that do not line up with the prompt")
    total = 0.0
    for pos in range(len(prompt_ids) - k, len(prompt_ids)):
        entry = plps[pos] or {}
        lp = entry.get(str(prompt_ids[pos]))
        if lp is None:
            raise EngineError(f"upstream returned no logprob for prompt position {pos}")
        total += float(lp["logprob"] if isinstance(lp, dict) else lp)
    return ScoreResult(logprob_sum=total, num_tokens=k, prompt_tokens=len(prompt_ids))


class ImageDataUrls:
    """PIL image -> PNG data URL, so the N x K probes of a request encode each image once.

    PIL images are unhashable: keyed by id, dropped when the image is collected."""

    def __init__(self) -> None:
        self._urls: dict[int, tuple[weakref.ref, str]] = {}

    def __call__(self, image: Any) -> str:
        key = id(image)
        entry = self._urls.get(key)
        if entry is not None and entry[0]() is image:
            return entry[1]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        self._urls[key] = (weakref.ref(image), url)
        weakref.finalize(image, self._urls.pop, key, None)
        return url
