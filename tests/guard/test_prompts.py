"""Prompt rendering with images: chat format with image parts, images attached, shared probe prefixes."""

from __future__ import annotations

import json
import os

import pytest

from guard.engine import Prompt
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


# -- the end of a scored answer ------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
LLAMA2 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<s>[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] | trim + ' </s>' }}{% endif %}{% endfor %}"
)
# ChatML with image parts (as server/vision_model.py): content is a string or a list of parts.
CHATML_VISION = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Writes the generation prompt whatever it is asked: only the marker itself ends the answer.
ALWAYS_PROMPTS = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{{ '<|im_start|>assistant\n' }}"
)
# Reads content only as a list of parts (some vision templates): a plain string renders as nothing.
PARTS_ONLY = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{{ '<|end|>\n' }}{% endfor %}"
)
# Separates turns with blank lines and ends none: no marker to read.
PLAIN = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n\n' }}{% endfor %}"
)


def jinja_renderer(template: str):
    import jinja2

    compiled = jinja2.Environment().from_string(template)
    calls = []

    def render_chat(messages, add_generation_prompt: bool = True) -> str:
        calls.append(messages)
        return compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token="<bos>"
        )

    render_chat.calls = calls
    return render_chat


@pytest.mark.parametrize(
    "template, terminator",
    [
        (CHATML, "<|im_end|>"),
        (CHATML_VISION, "<|im_end|>"),
        (LLAMA3, "<|eot_id|>"),
        (GEMMA, "<end_of_turn>"),
        (LLAMA2, " </s>"),  # the space the template writes before the marker is kept
        (ALWAYS_PROMPTS, "<|im_end|>"),
        (PARTS_ONLY, "<|end|>"),
        (PLAIN, "\n"),  # nothing but whitespace after the answer: the line break probes stop at
    ],
    ids=["chatml", "chatml-vision", "llama3", "gemma", "llama2", "always-prompts", "parts-only", "plain"],
)
def test_chat_answers_end_with_the_templates_end_of_turn_marker(template, terminator):
    prompts = PromptBuilder(PromptStyle.CHAT, jinja_renderer(template))
    probe = prompts.probe_prompt("Tom has 7 apples and buys 5. How many?", "7 + 5 = 12", "How many now?")
    assert prompts.continuation_prefix(probe) == ""
    assert prompts.continuation_suffix(probe) == terminator
    assert prompts.continuation(probe, "12") == "12" + terminator


def test_the_continuation_is_what_the_template_writes_for_an_answer():
    """Prompt + continuation is the conversation with the candidate as the assistant's answer, up to
    the end of its turn: exactly what the model was trained to write."""
    render = jinja_renderer(CHATML)
    prompts = PromptBuilder(PromptStyle.CHAT, render)
    messages = [{"role": "user", "content": "How many?"}]
    probe = Prompt(render(messages))
    answered = render([*messages, {"role": "assistant", "content": "12"}], add_generation_prompt=False)
    assert answered.startswith(probe.text + prompts.continuation(probe, "12"))


def test_a_template_that_refuses_the_conversation_falls_back_to_a_line_break():
    from guard.errors import InvalidArgumentError

    def refuse(messages, add_generation_prompt: bool = True) -> str:
        raise InvalidArgumentError("messages", "chat template failed: roles must alternate")

    prompts = PromptBuilder(PromptStyle.CHAT, refuse)
    assert prompts.continuation(Prompt("ctx"), "12") == "12\n"


def test_the_terminator_is_read_from_the_template_once():
    render = jinja_renderer(CHATML)
    prompts = PromptBuilder(PromptStyle.CHAT, render)
    for _ in range(3):
        assert prompts.continuation(Prompt("ctx"), "12") == "12<|im_end|>"
    assert len(render.calls) == 1


def test_an_engine_not_ready_yet_is_asked_again_later():
    from guard.errors import EngineError

    ready = []

    def render(messages, add_generation_prompt: bool = True) -> str:
        if not ready:
            raise EngineError("engine not started")
        return jinja_renderer(CHATML)(messages, add_generation_prompt)

    prompts = PromptBuilder(PromptStyle.CHAT, render)
    with pytest.raises(EngineError):
        prompts.continuation(Prompt("ctx"), "12")
    ready.append(True)
    assert prompts.continuation(Prompt("ctx"), "12") == "12<|im_end|>"


@pytest.mark.parametrize("style", list(PromptStyle))
def test_the_end_follows_the_probes_format_not_the_style(style):
    """Few-shot text probes end answers at the line (unchanged); image probes are chat whatever the style."""
    prompts = PromptBuilder(style, jinja_renderer(CHATML_VISION))
    text_probe = prompts.probe_prompt("How many?", "There are 12.", "How many red?")
    image_probe = prompts.probe_prompt("How many?", "There are 12.", "How many red?", images=[IMAGE])
    text_expected = " 12\n" if style is PromptStyle.FEWSHOT else "12<|im_end|>"
    assert prompts.continuation(text_probe, "12") == text_expected
    assert prompts.continuation(image_probe, "12") == "12<|im_end|>"


@pytest.mark.parametrize("style, ending", [(PromptStyle.FEWSHOT, "\n"), (PromptStyle.CHAT, "<|im_end|>")])
def test_scoring_plans_end_every_candidate(style, ending):
    """No candidate is scored as a bare prefix of another ("1" against "12")."""
    from guard.params import ScoreMode
    from guard.probe import ProbeOutcome, plan_scoring

    prompts = PromptBuilder(style, jinja_renderer(CHATML))
    probes = [prompts.probe_prompt("How many?", f"Path {i}: 5 + 7 = 12", "What is 5 + 7?") for i in range(3)]
    outcome = ProbeOutcome([probes], [["12", "12", "1"]], [{"12": "12", "1": "1"}])
    plan = plan_scoring(prompts, outcome, ScoreMode.FULL)
    assert sorted({item.continuation for item in plan.items}) == sorted(
        prompts.continuation(probes[0], cand) for cand in ("1", "12")
    )
    assert all(item.continuation.endswith(ending) for item in plan.items)
