"""ARS sources: cleaning model output, the bounded LRU cache and its key."""

import pytest

from guard.ars import ArsCache, ars_cache_key, clean_sub_questions
from guard.params import ImageInput


@pytest.mark.parametrize(
    "raw, expected",
    [
        (["How many at first?", "How many left?"], ["How many at first?", "How many left?"]),
        (["How many at first?", "how many at  first"], ["How many at first?"]),
        (["What is 2+2?", "How many?"], ["How many?"]),  # repeats the main question
        (["", "  ", 3, None, "Why?"], ["Why?"]),
        (["Q one?", "Q two?", "Q three?", "Q four?"], ["Q one?", "Q two?", "Q three?"]),  # capped at max_k
        ([], []),
    ],
)
def test_clean_sub_questions(raw, expected):
    assert clean_sub_questions(raw, "What is 2+2?", max_k=3) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        (["How many apples does he have?"], []),
        (["How many apples does Tom buy?", "How many apples does he have?"],
         ["How many apples does Tom buy?", "How many apples does he have?"]),
    ],
)
def test_restating_only_the_final_question_sentence_is_no_ars(raw, expected):
    question = "Tom has 7 apples and buys 5 more. How many apples does he have?"
    assert clean_sub_questions(raw, question, max_k=4) == expected


def test_cache_is_bounded_lru():
    cache = ArsCache(max_entries=2)
    cache.put("a", ["1"])
    cache.put("b", ["2"])
    assert cache.get("a") == ["1"]  # a is now most recent
    cache.put("c", ["3"])
    assert cache.get("b") is None
    assert cache.get("a") == ["1"] and cache.get("c") == ["3"]
    assert len(cache) == 2


def test_cache_key_depends_on_question_and_images():
    img1, img2 = ImageInput(b"one", "image/png"), ImageInput(b"two", "image/png")
    assert ars_cache_key("How many?", ()) == ars_cache_key("how many", ())
    assert ars_cache_key("How many?", ()) != ars_cache_key("How many now?", ())
    assert ars_cache_key("How many?", (img1,)) != ars_cache_key("How many?", (img2,))
    assert ars_cache_key("How many?", (img1,)) != ars_cache_key("How many?", ())

