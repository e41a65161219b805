"""Input checks and token-level helpers both engines share: image support, score-item token ids, top-k."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from guard.engine.base import ScoreItem
from guard.errors import InvalidArgumentError


def require_image_support(has_images: bool, *, accepts_images: bool, model_name: str, field: str) -> None:
    """Reject images for a model that cannot see them, naming the field that carried them."""
    if has_images and not accepts_images:
        raise InvalidArgumentError(field, f"model {model_name} does not accept images")


def encode_score_items(
    tokenizer: Any, items: Sequence[ScoreItem], *, accepts_images: bool, model_name: str
) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) of each item, for teacher-forced scoring."""
    encoded = []
    for i, item in enumerate(items):
        require_image_support(
            bool(item.context.images), accepts_images=accepts_images, model_name=model_name,
            field=f"items[{i}].context.images",
        )
        # Context and continuation are tokenized apart so the continuation's token span is
        # exact; the text already carries whatever special tokens the template put there.
        ctx = list(tokenizer.encode(item.context.text, add_special_tokens=False))
        cont = list(tokenizer.encode(item.continuation, add_special_tokens=False))
        if not ctx:
            bos = getattr(tokenizer, "bos_token_id", None)
            if bos is None:
                raise InvalidArgumentError(f"items[{i}].context", "is empty and the model has no BOS token")
            # The first token has no conditional probability; condition on BOS instead.
            ctx = [bos]
        encoded.append((ctx, cont))
    return encoded


def top_k(logprobs: Iterable[float], k: int) -> list[float]:
    """The k highest log-probs, best first.

    vLLM returns the top k plus the sampled token when it is not among them; only the k best count."""
    return sorted(logprobs, reverse=True)[:k]
