"""Reading short probe answers."""

import pytest


@pytest.mark.parametrize(
    "raw, expected",
    [(" 12\n", "12"), (" 3 + 16 = 19.", "19"), (" 5 apples", "5 apples"), ("", ""), ("\n\n", ""), (" 7\nmore", "7")],
)
def test_short_probe_answer(raw, expected):
    from guard.probe import _short

    assert _short(raw) == expected


@pytest.mark.parametrize("style", ["fewshot", "chat"])
def test_probes_of_a_path_share_its_prefix(style):
    import os

    from guard.prompts import PromptBuilder, PromptStyle
    from tests.scripted_engine import ScriptedEngine

    builder = PromptBuilder(PromptStyle(style), ScriptedEngine().render_chat)
    path = "He has 7 + 5 = 12 apples.\nAnswer: 12"
    a = builder.probe_prompt("Tom has 7 apples and buys 5. How many?", path, "How many at first?").text
    b = builder.probe_prompt("Tom has 7 apples and buys 5. How many?", path, "How many bought?").text
    shared = os.path.commonprefix([a, b])
    # Everything up to the sub-question is shared, including the whole path text.
    assert path in shared
    assert a[len(shared):].startswith("at first") or "at first" in a[len(shared) - 10:]
