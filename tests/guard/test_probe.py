"""Reading short probe answers."""

import pytest


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" 12\n", "12"),
        (" 3 + 16 = 19.", "19"),
        (" 5 apples", "5 apples"),
        ("", ""),
        ("\n\n", ""),
        (" 7\nmore", "7"),
        # The first complete equation's value, not the last one (usually the path's final answer).
        (" 24 - 9 = 15, then 15 + 6 = 21", "15"),
        (" 24 - 9 = 15. Then 15 + 6 = 21.", "15"),
        (" 24 / 2 = 12 and 12 * 3 = 36", "12"),
        (" 24 - 9 = 15 + 6 = 21", "15"),  # a chain: its first result
        (" 15, then 15 + 6 = 21", "15"),  # a plain value first
        (" He sold 9; he has 24 - 9 = 15 left", "15 left"),  # words first: the equation's value
        (" = 15", "15"),
        (" x = 5 km", "5 km"),
        (" 1,000 + 500 = 1,500", "1,500"),
        (" $24 - $9 = $15", "$15"),
        (" 3.5 + 1.5 = 5.0.", "5.0"),
        (" -3 + 5 = 2", "2"),
        (" 12 (7 + 5 = 12)", "12"),
        (" (3 + 4) * 2 = 14", "14"),
        (" 6 * 4 = 24 eggs", "24 eggs"),
        # Short answers that write their calculation, as the continue format's examples teach.
        (" 7 * 7 - 17 = 49 - 17 = 32", "49"),
        (" 30 * 5 = 150 miles.", "150 miles"),
        # Words with another number after the value: the value alone ("110 miles in 2 hours" is no number).
        (" 55 * 2 = 110 miles in 2 hours.", "110"),
        (" 3 * 8 = $24 for 3 shirts", "$24"),
        (" Paris, France", "Paris, France"),  # no equation: the line as written
    ],
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


def _probes(answers):
    """A ProbeOutcome for answers[k][i] with one distinct prompt per (k, i)."""
    from guard.engine import Prompt
    from guard.probe import ProbeOutcome

    prompts = [[Prompt(f"ctx k={k} i={i}") for i in range(len(row))] for k, row in enumerate(answers)]
    surface = [{a: a for a in row if a} for row in answers]
    return ProbeOutcome(prompts, [list(row) for row in answers], surface)


def _plan(answers, mode):
    from guard.probe import plan_scoring
    from guard.prompts import PromptBuilder, PromptStyle
    from tests.scripted_engine import ScriptedEngine

    return plan_scoring(PromptBuilder(PromptStyle.FEWSHOT, ScriptedEngine().render_chat), _probes(answers), mode)


def _scored(plan):
    """{(k, i): [candidates scored under path i's prompt for sub-question k]}."""
    out: dict[tuple[int, int], list[str]] = {}
    for k, i, cand in plan.index:
        out.setdefault((k, i), []).append(cand)
    return out


@pytest.mark.parametrize("mode", ["full", "contested", "hard"])
def test_unanimous_sub_question_is_never_scored(mode):
    from guard.params import ScoreMode

    plan = _plan([["7", "7", "7", ""]], ScoreMode(mode))
    assert plan.items == []
    assert plan.base == [[{"7": 1.0}] * 4]


def test_full_mode_scores_the_top_four_candidates_under_every_path():
    from guard.params import ScoreMode

    plan = _plan([["1", "2", "2", "3", "4", "5", "1", "2"]], ScoreMode.FULL)
    scored = _scored(plan)
    assert set(scored) == {(0, i) for i in range(8)}
    assert all(c == ["2", "1", "3", "4"] for c in scored.values())  # by count, ties in order of appearance
    assert len(plan.items) == 32
    # The continuation is the candidate between the style's prefix and suffix.
    assert plan.items[0].continuation == " 2\n" and plan.items[0].context.text == "ctx k=0 i=0"


def test_contested_mode_weighs_the_mode_against_each_paths_own_answer():
    from guard.params import ScoreMode

    plan = _plan([["5", "5", "3", "9", "", "5", "3", "8"]], ScoreMode.CONTESTED)
    scored = _scored(plan)
    # The mode (5) against the path's own answer; against the runner-up (3) when the path answered
    # the mode or nothing.
    assert scored == {
        (0, 0): ["5", "3"], (0, 1): ["5", "3"], (0, 2): ["5", "3"], (0, 3): ["5", "9"],
        (0, 4): ["5", "3"], (0, 5): ["5", "3"], (0, 6): ["5", "3"], (0, 7): ["5", "8"],
    }
    assert len(plan.items) == 16


@pytest.mark.parametrize(
    "row, scored",
    [
        (["5", "5", "5", "5", "5", "5", "3", "8"], False),  # 6 of 8 agree: left to hard agreement
        (["5", "5", "5", "5", "5", "3", "3", "8"], True),  # 5 of 8: contested
        (["5", "5", "5", "3"], False),  # 3 of 4
        (["5", "5", "3", "8"], True),  # 2 of 4, a strict mode: contested
        (["5", "5", "3", "3"], False),  # no strict mode: consistency reads nothing from it
    ],
)
def test_contested_mode_skips_sub_questions_most_paths_agree_on(row, scored):
    from guard.params import ScoreMode

    plan = _plan([row, ["1", "1", "2", "3"] * (len(row) // 4)], ScoreMode.CONTESTED)
    assert {k for k, _, _ in plan.index} == ({0, 1} if scored else {1})
    assert plan.base[0] == [None] * len(row)  # unscored: analyze_ars falls back to the hard answers


def test_hard_mode_scores_nothing():
    from guard.params import ScoreMode

    plan = _plan([["1", "2", "2", "3"], ["4", "4", "5", ""]], ScoreMode.HARD)
    assert plan.items == [] and plan.base == [[None] * 4, [None] * 4]


# -- the continue format: probes extend the path's own prompt and text ----------------------------

QUESTION = "A baker makes 24 muffins and sells 9. Then he bakes 6 more. How many muffins does he have now?"
PATH = " He has 24 - 9 = 15 muffins left after selling. Then he has 15 + 6 = 21 muffins.\nAnswer: 21"
WORKING = " He has 24 - 9 = 15 muffins left after selling. Then he has 15 + 6 = 21 muffins.\n"


def _builder(style, probe_format, render=None):
    from guard.prompts import ProbeFormat, PromptBuilder, PromptStyle
    from tests.scripted_engine import ScriptedEngine

    return PromptBuilder(PromptStyle(style), render or ScriptedEngine().render_chat, ProbeFormat(probe_format))


@pytest.mark.parametrize("style", ["fewshot", "chat"])
def test_a_continue_probe_is_the_sampling_prompt_then_the_path_up_to_its_answer_line(style):
    builder = _builder(style, "continue")
    sampled = builder.path_prompt(QUESTION).text
    probe = builder.probe_prompt(QUESTION, PATH, "How many muffins are left after selling?").text
    # Byte for byte what was sampled, so the tokenizer reproduces the path's cached tokens.
    assert probe.startswith(sampled + WORKING.rstrip())
    rest = probe[len(sampled + WORKING.rstrip()):]
    assert "How many muffins are left after selling?" in rest and "Answer: 21" not in rest
    if style == "fewshot":
        assert rest == "\nSub-question: How many muffins are left after selling?\nShort answer:"


@pytest.mark.parametrize(
    "path, working",
    [
        (PATH, WORKING),
        (" 15 + 6 = 21. Answer: 21", " 15 + 6 = 21.\n"),  # cut mid-line: a line break is added
        ("Answer: 21", "\n"),
        (" He has 21 muffins.", " He has 21 muffins.\n"),  # no answer line: the whole path
    ],
)
def test_a_fewshot_continue_probe_starts_the_sub_question_on_a_line_of_its_own(path, working):
    builder = _builder("fewshot", "continue")
    probe = builder.probe_prompt(QUESTION, path, "How many?").text
    assert probe == builder.path_prompt(QUESTION).text + working + "Sub-question: How many?\nShort answer:"


@pytest.mark.parametrize(
    "template", ["CHATML", "CHATML_VISION", "LLAMA3", "GEMMA"],
)
def test_a_chat_continue_probe_is_the_conversation_with_the_paths_own_text(template):
    """Through real chat templates: the sampling prompt, the path's text verbatim (even where the template
    would trim it), then what the template writes to end that turn and ask the sub-question."""
    from guard.prompts import PROBE_INSTRUCTION
    from tests.guard import test_prompts

    render = test_prompts.jinja_renderer(getattr(test_prompts, template))
    builder = _builder("chat", "continue", render)
    sampled = builder.path_prompt(QUESTION).text
    probe = builder.probe_prompt(QUESTION, PATH, "How many are left?").text
    assert probe.startswith(sampled + WORKING.rstrip())
    messages = [*builder._chat_messages(QUESTION, "", 0), {"role": "assistant", "content": WORKING.strip()}, {"role": "user", "content": PROBE_INSTRUCTION.format(sub_question="How many are left?")}]
    # Up to the path's own whitespace, the very conversation the template renders.
    assert probe.replace(WORKING.rstrip(), WORKING.strip()) == render(messages)


def test_a_chat_template_that_renders_past_turns_differently_gets_the_conversation_rendered():
    """A template whose generation prompt differs from how it writes a past assistant turn (here: an
    empty thinking block) cannot share the prefix: the probe is the rendered conversation, still without
    the path's answer line."""
    from tests.guard.test_prompts import CHATML, jinja_renderer

    thinking = CHATML.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think></think>'")
    builder = _builder("chat", "continue", jinja_renderer(thinking))
    sampled = builder.path_prompt(QUESTION).text
    probe = builder.probe_prompt(QUESTION, PATH, "How many are left?").text
    assert sampled.endswith("<think></think>") and not probe.startswith(sampled)
    assert WORKING.strip() in probe and "Answer: 21" not in probe


def test_continue_probes_with_images_extend_the_image_prompt():
    builder = _builder("fewshot", "continue")
    image = object()
    sampled = builder.path_prompt(QUESTION, images=[image])
    probe = builder.probe_prompt(QUESTION, PATH, "How many?", images=[image])
    assert probe.images == (image,) and probe.text.startswith(sampled.text + WORKING.rstrip())
    assert "Answer: 21" not in probe.text


def test_the_continue_format_teaches_sub_questions_in_the_sampling_prompt_and_never_samples_them():
    legacy, cont = _builder("fewshot", "legacy"), _builder("fewshot", "continue")
    assert "Sub-question:" not in legacy.path_prompt(QUESTION).text
    assert legacy.path_stop == ("\n\n", "\nQuestion:")
    text = cont.path_prompt(QUESTION).text
    assert "Answer: 21\nSub-question: How many muffins are left after selling?\nShort answer: 24 - 9 = 15\n" in text
    assert text.endswith(f"Question: {QUESTION}\nSolution:")
    assert cont.path_stop == ("\n\n", "\nQuestion:", "\nSub-question:", "\nShort answer:")
    # Its examples ask for each part of a compound line, and their short answers write the calculation of a
    # computed value (read as its result), never just a number; a given number stays a number. The plain
    # prompt (every request that does not probe) keeps the examples it always had.
    assert ("= 24 + 10 = 34 dollars.\nAnswer: 34\nSub-question: How many dollars does the shop get for the shirts?"
            "\nShort answer: 3 * 8 = 24\nSub-question: How many dollars does the shop get for the hats?"
            "\nShort answer: 2 * 5 = 10\n" in text)
    assert "Sub-question: How many stickers does Lily have at first?\nShort answer: 9\n" in text
    assert "How many rows are in the box?" not in text
    assert "shirts" not in legacy.path_prompt(QUESTION).text and "6 * 4 = 24 eggs" in legacy.path_prompt(QUESTION).text
    # Chat sampling is the same in both formats.
    assert _builder("chat", "continue").path_prompt(QUESTION) == _builder("chat", "legacy").path_prompt(QUESTION)
    assert _builder("chat", "continue").path_stop == ()


@pytest.mark.parametrize("style", ["fewshot", "chat"])
def test_legacy_probes_are_unchanged(style):
    builder = _builder(style, "legacy")
    probe = builder.probe_prompt(QUESTION, PATH, "How many?").text
    assert PATH.strip() in probe  # the whole path, answer line included
    if style == "fewshot":
        assert probe.endswith(f"Question: {QUESTION}\nSolution: {PATH.strip()}\nSub-question: How many?\nShort answer:")


@pytest.mark.parametrize("style", ["fewshot", "chat"])
async def test_the_pipelines_continue_probes_extend_what_was_sampled(style):
    """End to end on the scripted engine: every probe starts with the sampling prompt and its path's
    text less the answer line; sampling stops before a sub-question line; the simulated prefix cache
    serves far more of the probe prompts than in the legacy format."""
    from guard.params import GuardParams
    from guard.pipeline import GuardConfig, GuardPipeline
    from guard.prompts import ProbeFormat, PromptStyle
    from tests.scripted_engine import ScriptedEngine

    paths = [PATH, " He sells 9, so 24 - 9 = 15. He bakes 6: 15 + 6 = 21.\nAnswer: 21"]
    shares = {}
    for probe_format in ProbeFormat:
        engine = ScriptedEngine(paths=paths, probe=lambda path, sub: "15", prefix_cache=True)
        config = GuardConfig(prompt_style=PromptStyle(style), probe_format=probe_format)
        result = await GuardPipeline(engine, config).run(GuardParams(
            question=QUESTION, num_paths=2, sub_questions=("How many are left after selling?", "How many now?")))
        usage = result.usage["probe"]
        shares[probe_format] = usage.cached_prompt_tokens / usage.prompt_tokens
        if probe_format is ProbeFormat.CONTINUE:
            (sampled,) = [p.text for kind, p in engine.prompts if kind == "sample"]
            probes = [p.text for kind, p in engine.prompts if kind == "probe"]
            assert len(probes) == 4
            for k in range(2):
                for i, path in enumerate(paths):
                    working = path.removesuffix("Answer: 21").rstrip()
                    assert probes[k * 2 + i].startswith(sampled + working)
                    assert "Answer: 21" not in probes[k * 2 + i][len(sampled):]
            assert result.sub_questions[0].path_answers == ["15", "15"]
            assert result.sub_questions[0].from_path_values == 2
    # Only the sub-question is new to the cache (a word of its path's text may be recomputed).
    assert shares[ProbeFormat.CONTINUE] > max(0.8, shares[ProbeFormat.LEGACY]), shares


class _LikelihoodEngine:
    """Scores a candidate by a table keyed by (prompt text, continuation stripped)."""

    def __init__(self, table, default=-9.0):
        self.table, self.default, self.scored = table, default, []

    async def score(self, items, request_id):
        from guard.engine import ScoreResult

        self.scored += [(item.context.text, item.continuation.strip()) for item in items]
        return [ScoreResult(self.table.get((item.context.text, item.continuation.strip()), self.default), 1, 3)
                for item in items]


def test_value_reading_plans_each_paths_own_values_and_its_greedy_answer():
    from guard.probe import plan_value_reading
    from guard.prompts import PromptBuilder, PromptStyle
    from tests.scripted_engine import ScriptedEngine

    probes = _probes([["21", "", "9"]])
    builder = PromptBuilder(PromptStyle.FEWSHOT, ScriptedEngine().render_chat)
    plan = plan_value_reading(builder, probes, [["24", "9", "15", "21"], ["24"], []], max_values=3)
    # Path 0: its first three values and its greedy answer; path 1: one value, nothing to choose;
    # path 2: wrote no value, keeps its greedy answer.
    assert _scored(plan) == {(0, 0): ["24", "9", "15", "21"]}
    assert all(item.continuation == " " + cand + "\n" for item, (_, _, cand) in zip(plan.items, plan.index))


async def test_value_reading_keeps_the_likeliest_value_and_breaks_ties_by_the_value():
    from guard.probe import plan_value_reading, read_values
    from guard.prompts import PromptBuilder, PromptStyle
    from guard.result import PhaseUsage
    from tests.scripted_engine import ScriptedEngine

    probes = _probes([["21", "21", ""]])
    builder = PromptBuilder(PromptStyle.FEWSHOT, ScriptedEngine().render_chat)
    values = [["24", "15", "21"], ["24", "15", "21"], ["15", "6"]]
    plan = plan_value_reading(builder, probes, values)
    engine = _LikelihoodEngine({("ctx k=0 i=0", "15"): -1.0, ("ctx k=0 i=0", "21"): -2.0,
                                ("ctx k=0 i=1", "15"): -1.0, ("ctx k=0 i=1", "24"): -1.0})
    usage = PhaseUsage()
    read = await read_values(engine, plan, probes, request_id="r", usage=usage)
    # Path 0 wrote 15 and the probe finds it likelier than its echo 21; path 1 ties 15 and 24 (the
    # smaller string wins, whatever the planning order); path 2's probe was unreadable, its values tie.
    assert read.answers == [["15", "15", "15"]]
    assert usage.prompt_tokens == 3 * len(plan.items)
    assert probes.answers == [["21", "21", ""]]  # the greedy outcome is left as it was


async def test_the_pipeline_reads_values_when_configured():
    from guard.params import GuardParams
    from guard.pipeline import GuardConfig, GuardPipeline
    from guard.probe import ProbeRead
    from tests.scripted_engine import ScriptedEngine

    engine = ScriptedEngine(paths=["7 + 5 = 12. Answer: 12"], probe=lambda path, sub: "7")
    # Two equal paths: one probe, and its 3 candidate values (7, 5, 12) scored once for both.
    for read, score_calls in ((ProbeRead.GREEDY, []), (ProbeRead.VALUES, [3])):
        engine.calls.clear()
        result = await GuardPipeline(engine, GuardConfig(probe_read=read)).run(GuardParams(
            question="Tom has 7 apples and buys 5. How many?", num_paths=2,
            sub_questions=("How many at first?",), scorer="trace"))
        assert [n for kind, n in engine.calls if kind == "score"] == score_calls
        assert result.sub_questions[0].path_answers == ["7", "7"]


async def test_equal_paths_share_their_probes_and_restated_questions_are_not_asked():
    from guard.probe import probe_paths
    from guard.prompts import PromptBuilder, PromptStyle
    from guard.result import PhaseUsage
    from tests.scripted_engine import ScriptedEngine

    engine = ScriptedEngine(probe=lambda path, sub: "7" if "7" in path else "6")
    usage = PhaseUsage()
    question = "Tom has 7 apples and buys 5. How many apples does Tom have?"
    outcome = await probe_paths(
        engine, PromptBuilder(PromptStyle.FEWSHOT, engine.render_chat), question,
        [" 7 + 5 = 12.\nAnswer: 12", " 6 + 5 = 11.\nAnswer: 11", " 7 + 5 = 12.\nAnswer: 12"],
        ["How many at first?", "How many apples does Tom have?"],
        system_prompt="", images=[], max_tokens=8, request_id="r", usage=usage,
    )
    # Paths 0 and 2 are equal: 2 distinct probes for the one asked sub-question, answers mapped back to
    # every path; the second sub-question restates the question and is not asked.
    assert [kind for kind, _ in engine.calls] == ["probe", "probe"]
    assert outcome.requests == 2 and outcome.asked == [True, False]
    assert outcome.answers == [["7", "6", "7"], ["", "", ""]]
    assert outcome.surface[1] == {} and usage.generated_tokens == 2


async def test_equal_scorings_are_sent_once():
    from guard.engine import Prompt, ScoreItem
    from guard.probe import ScorePlan, score_candidates
    from guard.result import PhaseUsage
    from tests.scripted_engine import ScriptedEngine

    engine = ScriptedEngine()
    same = Prompt("ctx")
    plan = ScorePlan(
        [ScoreItem(same, " 7"), ScoreItem(same, " 8"), ScoreItem(Prompt("ctx"), " 7"), ScoreItem(Prompt("ctx"), " 8")],
        [(0, 0, "7"), (0, 0, "8"), (0, 1, "7"), (0, 1, "8")], [[None, None]],
    )
    usage = PhaseUsage()
    soft = await score_candidates(engine, plan, request_id="r", usage=usage)
    assert [n for kind, n in engine.calls if kind == "score"] == [2]
    assert soft[0][0] == soft[0][1] and set(soft[0][0]) == {"7", "8"}


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" 7 * 7 - 17 = 49 - 1", "49"),          # the first result, with more after it: whole
        (" 30 * 5 = 150 miles in the first", "150"),
        (" 287 + 76 = 44", ""),                 # may be 443 cut short
        (" 287 + 76 = 443", ""),                # the same: nothing after it
        (" 2 * 1,5", ""),                       # no equation
        (" 12 + 3 = 15.5 and", "15.5"),
        (" 12 + 3 = 15, then 15 +", "15"),
        (" 3 * 4 = 12.", ""),                   # "12." may be "12.5" cut short
        ("", ""),
    ],
)
def test_a_probe_cut_at_its_limit_is_read_only_where_the_cut_cannot_have_touched_the_value(raw, expected):
    from guard.probe import _cut_short

    assert _cut_short(raw) == expected
