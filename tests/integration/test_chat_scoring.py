"""Chat-style scoring on the real engine: answers are scored up to the template's end of turn, so a
prefix of the right answer ("1" of "12") cannot win by being shorter."""

from __future__ import annotations

import logging

import pytest

from guard.engine import ScoreItem
from guard.params import ScoreMode
from guard.probe import ProbeOutcome, plan_scoring, score_candidates
from guard.prompts import PromptBuilder, PromptStyle
from guard.result import PhaseUsage
from tests.integration.conftest import _model_dir

QUESTION = "Tom has 5 apples and buys 7 more. How many apples does he have now?"
PATH = "Tom starts with 5 apples and buys 7 more, so he has 5 + 7 = 12 apples.\nAnswer: 12"
SUB_QUESTION = "What is 5 + 7?"

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def engine(in_process_engine):
    return in_process_engine


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_dir())


@pytest.fixture
def prompts(engine) -> PromptBuilder:
    return PromptBuilder(PromptStyle.CHAT, engine.render_chat)


def test_the_chat_answer_ends_with_the_templates_end_of_turn_token(prompts, tokenizer):
    # SmolLM2 uses ChatML; the marker comes from its own template, and it is one special token.
    assert prompts.continuation_suffix(prompts.probe_prompt(QUESTION, PATH, SUB_QUESTION)) == "<|im_end|>"
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in tokenizer.all_special_ids
    assert tokenizer.encode("12<|im_end|>", add_special_tokens=False) == [
        *tokenizer.encode("12", add_special_tokens=False), end_of_turn
    ]


async def test_the_right_answer_beats_its_prefix_only_when_its_end_is_scored(engine, prompts, tokenizer):
    probe = prompts.probe_prompt(QUESTION, PATH, SUB_QUESTION)
    candidates = ("1", "12")
    ended = [ScoreItem(probe, prompts.continuation(probe, c)) for c in candidates]
    bare = [ScoreItem(probe, prompts.continuation_prefix(probe) + c) for c in candidates]
    scores = await engine.score(ended + bare, "chat-scoring")
    (one, twelve), (bare_one, bare_twelve) = scores[:2], scores[2:]
    logger.info(
        "log P: ended 1=%.3f 12=%.3f; bare 1=%.3f 12=%.3f",
        one.logprob_sum, twelve.logprob_sum, bare_one.logprob_sum, bare_twelve.logprob_sum,
    )

    # The end-of-turn marker is scored as the one special token, after the candidate's own tokens.
    assert (one.num_tokens, twelve.num_tokens) == (2, 3)
    assert twelve.logprob_sum > one.logprob_sum, (twelve.logprob_sum, one.logprob_sum)

    # Without the marker "1" can never lose to "12": "12" is "1" then "2", so
    # log P("12") = log P("1") + log P("2" | "1") <= log P("1"), up to the engine's rounding.
    assert tokenizer.encode("12", add_special_tokens=False) == [
        *tokenizer.encode("1", add_special_tokens=False), *tokenizer.encode("2", add_special_tokens=False)
    ]
    assert (bare_one.num_tokens, bare_twelve.num_tokens) == (1, 2)
    assert bare_one.logprob_sum >= bare_twelve.logprob_sum - 1e-3, (
        bare_one.logprob_sum, bare_twelve.logprob_sum
    )


async def test_soft_answers_of_chat_probes_favour_the_path_answer_over_its_prefix(engine, prompts):
    """The whole score stage (plan, batched scoring, softmax) on chat probes: every path says 12, one
    probe answer was misread as "1"."""
    paths = (
        PATH,
        "He has 5 apples. Buying 7 more gives 5 + 7 = 12.\nAnswer: 12",
        "5 apples and 7 more apples: 5 + 7 = 12 apples in all.\nAnswer: 12",
    )
    probes = [prompts.probe_prompt(QUESTION, p, SUB_QUESTION) for p in paths]
    outcome = ProbeOutcome([probes], [["12", "12", "1"]], [{"12": "12", "1": "1"}])
    plan = plan_scoring(prompts, outcome, ScoreMode.FULL)
    assert {item.continuation for item in plan.items} == {"1<|im_end|>", "12<|im_end|>"}
    usage = PhaseUsage()
    soft = await score_candidates(engine, plan, request_id="chat-soft", usage=usage)
    logger.info("soft answers: %s", soft[0])
    for path_soft in soft[0]:
        assert path_soft is not None and path_soft["12"] > path_soft["1"], soft
