"""Prompt rendering with images: chat format with image parts, images attached, shared probe prefixes."""

from __future__ import annotations

import json
import os

import pytest

from guard.prompts import PromptBuilder, PromptStyle

IMAGE = object()  # stands in for a decoded PIL image: prompts only carry it along


def render(messages, add_generation_prompt: bool = True) -> str:
    return "".join(json.dumps(m, sort_keys=True) + "\n" for m in messages) + ("ASSISTANT:" if add_generation_prompt else "")


@pytest.mark.parametrize("style", list(PromptStyle))
def test_image_prompts_use_the_chat_template_with_image_parts_first(style):
    prompts = PromptBuilder(style, render)
    for prompt in (
        prompts.path_prompt("How many?", images=[IMAGE, IMAGE]),
        prompts.ars_prompt("How many?", 3, images=[IMAGE, IMAGE]),
        prompts.probe_prompt("How many?", "There are 3.", "How many red?", images=[IMAGE, IMAGE]),
    ):
        assert prompt.images == (IMAGE, IMAGE)
        first_user = json.loads(prompt.text.splitlines()[0])
        assert first_user["role"] == "user"
        kinds = [part["type"] for part in first_user["content"]]
        # Images before the text, as VLM chat templates expect; only in the first user turn.
        assert kinds == ["image", "image", "text"]
        assert prompt.text.count('"image"') == 2


def test_text_only_fewshot_prompts_carry_no_images():
    prompts = PromptBuilder(PromptStyle.FEWSHOT, render)
    prompt = prompts.path_prompt("How many?")
    assert prompt.images == () and prompt.text.endswith("Question: How many?\nSolution:")


def test_probes_of_one_path_share_everything_before_the_sub_question():
    """The image and the path come first, so vLLM's prefix cache serves the K probes of a path (and their
    scorings) from one prefill."""
    prompts = PromptBuilder(PromptStyle.CHAT, render)
    a = prompts.probe_prompt("How many?", "There are 3.", "How many red?", images=[IMAGE]).text
    b = prompts.probe_prompt("How many?", "There are 3.", "How many blue?", images=[IMAGE]).text
    other_path = prompts.probe_prompt("How many?", "There are 4.", "How many red?", images=[IMAGE]).text
    assert "There are 3." in os.path.commonprefix([a, b])
    path_prompt = prompts.path_prompt("How many?", images=[IMAGE]).text.removesuffix("ASSISTANT:")
    # Every probe starts with the path prompt's messages (system/user with the image).
    assert a.startswith(path_prompt) and other_path.startswith(path_prompt)
