"""Renders OpenAI-style chat messages to prompt text with a Hugging Face tokenizer's chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from guard.engine.tokens import require_image_support
from guard.errors import EngineError, InvalidArgumentError

IMAGE_PART_TYPES = ("image", "image_url", "input_image")


def normalize_message(index: int, message: dict, *, accepts_images: bool, model_name: str) -> dict:
    """One message in the shape HF chat templates expect.

    Multimodal templates get `{"type": "image"}` placeholders (they only need to know where the
    image goes); text-only templates get the text parts joined into one string.
    """
    content = message.get("content")
    if content is None or isinstance(content, str):
        return dict(message)
    if not isinstance(content, (list, tuple)):
        raise InvalidArgumentError(f"messages[{index}].content", "must be a string or a list of parts")
    parts: list[dict] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind in IMAGE_PART_TYPES:
            require_image_support(
                True, accepts_images=accepts_images, model_name=model_name, field=f"messages[{index}].content"
            )
            parts.append({"type": "image"})
        else:
            raise InvalidArgumentError(f"messages[{index}].content", f"unsupported content part type {kind!r}")
    out = dict(message)
    out["content"] = parts if accepts_images else "\n".join(p["text"] for p in parts)
    return out


def render_chat(
    tokenizer: Any,
    chat_template: str | None,
    messages: Sequence[dict],
    *,
    accepts_images: bool,
    model_name: str,
    add_generation_prompt: bool = True,
) -> str:
    conversation = [
        normalize_message(i, m, accepts_images=accepts_images, model_name=model_name) for i, m in enumerate(messages)
    ]
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    try:
        text = tokenizer.apply_chat_template(conversation, **kwargs)
    except Exception as exc:
        raise InvalidArgumentError("messages", f"chat template failed: {exc}") from exc
    if not isinstance(text, str):
        raise EngineError(f"chat template returned {type(text).__name__}, expected str")
    return text
