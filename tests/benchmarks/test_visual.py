"""Synthetic visual problems: deterministic, valid images, answers re-derived from the pixels and the text."""

import io
import json
import math
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from benchmarks import datasets, quality, scenes, visual
from guard.images import decode_images
from guard.params import GuardParams, ImageInput, Limits
from tests.scripted_engine import ScriptedEngine

WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def problems() -> list[visual.VisualProblem]:
    # The default dataset as quality.py sees it, plus more of each task under another seed.
    return visual.generate(200) + [p for task in visual.TASKS for p in visual.generate(40, seed=1, task=task)]


def pixels(problem: visual.VisualProblem) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(problem.png)).convert("RGB"))


def colour_keys(rgb: np.ndarray) -> np.ndarray:
    """One integer per pixel, so comparing a colour is one comparison."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]


def colour_key(rgb: tuple[int, int, int]) -> int:
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


# -- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_bytes_and_questions_and_a_limit_is_a_prefix():
    first, again = visual.generate(24, seed=5), visual.generate(40, seed=5)[:24]
    assert [(p.id, p.question, p.answer, p.sub_questions, p.sub_answers, p.png) for p in first] == [
        (p.id, p.question, p.answer, p.sub_questions, p.sub_answers, p.png) for p in again
    ]
    other = visual.generate(24, seed=6)
    assert sum(a.png == b.png for a, b in zip(first, other)) == 0
    assert len({p.id for p in first + other}) == 48


# -- images ---------------------------------------------------------------------------------------


def test_every_image_decodes_and_passes_the_guard_image_checks(problems):
    decoded = decode_images([ImageInput(p.png, "image/png") for p in problems[:4]], Limits())
    assert [im.size for im in decoded] == [(scenes.IMAGE_SIZE_PX,) * 2] * 4
    for p in problems:
        [image] = decode_images([ImageInput(p.png, "image/png")], Limits())
        assert 224 <= image.width == image.height <= 384 and image.mode == "RGB"
        assert len(p.png) <= Limits().max_image_bytes


def test_every_shape_is_drawn_as_described_and_nothing_else_is_drawn(problems):
    fill_ratio = {"square": (1.0, 1.0), "circle": (0.72, 0.85), "triangle": (0.4, 0.6)}
    assert scenes.HALF_SIDE_PX["small"] < scenes.HALF_SIDE_PX["medium"] < scenes.HALF_SIDE_PX["large"]
    for p in problems:
        key = colour_keys(pixels(p))
        declared = dict.fromkeys(scenes.COLOURS, 0)
        for s in p.scene.shapes:
            assert s.half_px == scenes.HALF_SIDE_PX[s.size]
            x0, y0, x1, y1 = s.box
            inside = key[y0:y1, x0:x1] == colour_key(scenes.COLOURS[s.colour])
            low, high = fill_ratio[s.shape]
            assert low <= inside.mean() <= high, (p.id, s)
            ys, xs = np.nonzero(inside)
            # The shape spans its whole box: its size is what the scene says.
            assert (xs.min(), xs.max(), ys.min(), ys.max()) == (0, 2 * s.half_px - 1, 0, 2 * s.half_px - 1), (
                p.id,
                s,
            )
            declared[s.colour] += inside.sum()
        # Every pixel of a colour lies in a box of a shape of that colour: no undeclared shapes.
        assert {name: (key == colour_key(rgb)).sum() for name, rgb in scenes.COLOURS.items()} == declared, (
            p.id
        )
        outside = key != colour_key(WHITE)
        for obj in p.scene.shapes + p.scene.numbers:
            x0, y0, x1, y1 = obj.box
            outside[y0:y1, x0:x1] = False
        assert not outside.any(), p.id


def test_every_number_card_shows_its_value(problems):
    font = ImageFont.load_default(size=scenes.NUMBER_FONT_PX)
    shown = [(p, n) for p in problems for n in p.scene.numbers]
    assert len(shown) > 100
    for p, n in shown:
        side = 2 * n.half_px
        expected = Image.new("RGB", (side, side), WHITE)
        draw = ImageDraw.Draw(expected)
        draw.rectangle((0, 0, side - 1, side - 1), outline=scenes.CARD_OUTLINE, width=2)
        draw.text((n.half_px, n.half_px), str(n.value), fill=(0, 0, 0), font=font, anchor="mm")
        x0, y0, x1, y1 = n.box
        assert np.array_equal(pixels(p)[y0:y1, x0:x1], np.asarray(expected)), (p.id, n)


def test_objects_do_not_overlap_and_sides_are_unambiguous(problems):
    for p in problems:
        objects = p.scene.shapes + p.scene.numbers
        mid = p.scene.size_px // 2
        for i, a in enumerate(objects):
            ax0, ay0, ax1, ay1 = a.box
            assert ax0 > 0 and ay0 > 0 and ax1 < p.scene.size_px and ay1 < p.scene.size_px
            for b in objects[i + 1 :]:
                bx0, by0, bx1, by1 = b.box
                assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0, (p.id, a, b)
        # No shape straddles the midline; no number shares columns with another.
        assert all(s.box[2] <= mid or s.box[0] >= mid for s in p.scene.shapes), p.id
        for i, a in enumerate(p.scene.numbers):
            assert all(a.box[2] < b.box[0] or b.box[2] < a.box[0] for b in p.scene.numbers[i + 1 :]), p.id


# -- answers, re-derived from the question text and the scene -------------------------------------

_COLOURS = "red|green|blue|yellow|purple"


def _filter(tag: str) -> str:
    return (
        rf"(?:(?P<size{tag}>small|medium|large) )?(?:(?P<colour{tag}>{_COLOURS}) )?"
        rf"(?P<shape{tag}>square|circle|triangle|object)s"
    )


def _matching(scene, m, tag=""):
    size, colour, shape = m[f"size{tag}"], m[f"colour{tag}"], m[f"shape{tag}"]
    return [
        s
        for s in scene.shapes
        if size in (None, s.size) and colour in (None, s.colour) and shape in ("object", s.shape)
    ]


def _the(scene, first: str, shape: str):
    """The one object called 'the <first> <shape>' (first: a colour or a size); it must be unique."""
    [obj] = [s for s in scene.shapes if s.shape == shape and first in (s.colour, s.size)]
    return obj


def _side_of(scene, m):
    anchor = _the(scene, m["acolour"], m["ashape"])
    others = [s for s in _matching(scene, m) if s is not anchor]
    # Nothing shares columns with the anchor, so left/right of it is clear-cut.
    assert all(s.box[2] < anchor.box[0] or s.box[0] > anchor.box[2] for s in scene.shapes if s is not anchor)
    return [s for s in others if (s.box[2] < anchor.box[0]) == (m["side"] == "left")]


def _in_half(scene, m):
    mid = scene.size_px // 2
    return [s for s in _matching(scene, m) if (s.box[2] <= mid if m["side"] == "left" else s.box[0] >= mid)]


def _by_x(scene):
    return [n.value for n in sorted(scene.numbers, key=lambda n: n.box[0])]


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


_THE = r"the (?P<z>small|large) (?P<s>\w+)"


def _same_colour(scene, m) -> int:
    return sum(s.colour == _the(scene, m["z"], m["s"]).colour for s in scene.shapes)


def _number(scene, m, count: int, places: tuple[str, ...]):
    """The number at `m["w"]` among `places` (left to right); None when the scene has another count."""
    return _by_x(scene)[places.index(m["w"])] if len(scene.numbers) == count else None


# Every question and sub-question form, read without the generator's code, and its answer.
QUESTIONS = [
    (rf"How many {_filter('')} are (?:in the image|there)\?", lambda sc, m: len(_matching(sc, m))),
    (rf"How many {_filter('')} are in the (?P<side>left|right) half of the image\?",
     lambda sc, m: len(_in_half(sc, m))),
    (rf"How many {_filter('')} are (?P<side>left|right) of the (?P<acolour>{_COLOURS}) (?P<ashape>\w+)\?",
     lambda sc, m: len(_side_of(sc, m))),
    (rf"How many more {_filter('')} than {_filter('2')} are there\?",
     lambda sc, m: len(_matching(sc, m)) - len(_matching(sc, m, "2"))),
    (rf"Are there more {_filter('')} than {_filter('2')}(?: in the image)?\?",
     lambda sc, m: _yes_no(len(_matching(sc, m)) > len(_matching(sc, m, "2")))),
    (rf"How many objects are (?P<c>{_COLOURS}) or (?P<z>small|large) \(or both\)\?",
     lambda sc, m: sum(s.colour == m["c"] or s.size == m["z"] for s in sc.shapes)),
    (rf"What colour is {_THE}\?", lambda sc, m: _the(sc, m["z"], m["s"]).colour),
    (rf"How many objects have the same colour as {_THE}, including the (?P=z) (?P=s) itself\?", _same_colour),
    (rf"How many other objects are the same colour as {_THE}\?", lambda sc, m: _same_colour(sc, m) - 1),
    (r"What is the number on the (?P<w>left|right)\?", lambda sc, m: _number(sc, m, 2, ("left", "right"))),
    (r"What is the (?P<w>leftmost|middle|rightmost) number\?",
     lambda sc, m: _number(sc, m, 3, ("leftmost", "middle", "rightmost"))),
    (r"What is the (?P<w>larger|smaller) number shown\?",
     lambda sc, m: (max if m["w"] == "larger" else min)(_by_x(sc))),
    (r"What is the sum of the (?P<k>two|three) numbers shown\?",
     lambda sc, m: sum(_by_x(sc)) if len(sc.numbers) == {"two": 2, "three": 3}[m["k"]] else None),
    (r"What is the product of the two numbers shown\?",
     lambda sc, m: math.prod(_by_x(sc)) if len(sc.numbers) == 2 else None),
    (r"What is the larger number minus the smaller number\?", lambda sc, m: max(_by_x(sc)) - min(_by_x(sc))),
]


def answer_of(question: str, scene) -> str:
    for pattern, evaluate in QUESTIONS:
        if (m := re.fullmatch(pattern, question)) is not None:
            return str(evaluate(scene, m))
    raise AssertionError(f"no reading of {question!r}")


def test_answers_and_sub_answers_recomputed_from_the_scene_match(problems):
    for p in problems:
        assert answer_of(p.question, p.scene) == p.answer, p.id
        assert [answer_of(q, p.scene) for q in p.sub_questions] == list(p.sub_answers), p.id


# How each template's final answer follows from its gold sub-answers alone.
COMBINE = {
    "count": lambda a: int(a[0]) + int(a[1]),
    "compare_more": lambda a: _yes_no(int(a[0]) > int(a[1])),
    "compare_difference": lambda a: int(a[0]) - int(a[1]),
    "numbers_sum": lambda a: sum(map(int, a)),
    "numbers_sum3": lambda a: sum(map(int, a)),
    "numbers_product": lambda a: math.prod(map(int, a)),
    "numbers_difference": lambda a: int(a[0]) - int(a[1]),
    "scene_relate": lambda a: int(a[0]) - int(a[1]),
    "scene_or": lambda a: int(a[0]) + int(a[1]) - int(a[2]),
    "scene_same_colour": lambda a: int(a[1]) - 1,
    "scene_more_size": lambda a: _yes_no(int(a[0]) > int(a[1])),
}


def test_sub_answers_determine_the_answer(problems):
    assert {p.template for p in problems} == set(COMBINE)
    for p in problems:
        assert 2 <= len(p.sub_questions) == len(p.sub_answers) <= 3, p.id
        assert str(COMBINE[p.template](p.sub_answers)) == p.answer, p.id


def test_answers_are_varied_and_well_formed(problems):
    by_template: dict[str, set[str]] = {}
    for p in problems:
        by_template.setdefault(p.template, set()).add(p.answer)
        assert re.fullmatch(r"\d+|yes|no", p.answer), p.id
    assert by_template["compare_more"] == by_template["scene_more_size"] == {"yes", "no"}
    assert all(len(answers) >= 2 for answers in by_template.values()), by_template
    assert "0" not in by_template["compare_difference"]


# -- as a dataset ---------------------------------------------------------------------------------


def test_the_adapter_loads_generated_problems_with_images():
    loaded = datasets.load("visual", limit=12)
    assert [p.id for p in loaded] == [f"visual-s0-{i:04d}" for i in range(12)]
    assert [p.question for p in loaded] == [p.question for p in visual.generate(12)]
    assert len(datasets.load("visual")) == visual.DEFAULT_COUNT
    for p in loaded:
        [(data, mime_type)] = p.images
        assert mime_type == "image/png" and data.startswith(b"\x89PNG")
        subs, values = quality.gold_ars(p)
        assert (subs, values) == (p.sub_questions, p.sub_answers)
        GuardParams(question=p.question, sub_questions=subs, images=(ImageInput(data, mime_type),))
    scenes = datasets.load("visual-scene@7", limit=5)
    assert [p.id for p in scenes] == [f"visual-scene-s7-{i:04d}" for i in range(5)]
    assert all(p.id.startswith("visual-scene") for p in scenes)


@pytest.mark.parametrize("name", ["visual-colour", "visual@x", "visual-count@"])
def test_a_bad_generated_name_is_refused_with_the_name(name):
    with pytest.raises(ValueError, match=re.escape(name)):
        datasets.load(name)


def test_the_command_writes_pngs_and_a_jsonl_the_adapter_reads(tmp_path, capsys):
    assert visual.main(["--out", str(tmp_path), "--count", "6", "--seed", "3"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "problems.jsonl").read_text().splitlines()]
    generated = visual.generate(6, seed=3)
    assert [r["id"] for r in rows] == [p.id for p in generated]
    for row, p in zip(rows, generated):
        assert (tmp_path / row["image_file"]).read_bytes() == p.png
        assert row["scene"]["shapes"] == [vars(s) for s in p.scene.shapes]
    assert datasets.load(str(tmp_path / "problems.jsonl")) == [p.to_problem() for p in generated]


class _ImageRecordingEngine(ScriptedEngine):
    def __init__(self, *args, **kwargs):
        super().__init__(accepts_images=True)
        self.prompt_images: list[tuple] = []

    async def generate(self, prompt, spec, request_id):
        self.prompt_images.append(prompt.images)
        return await super().generate(prompt, spec, request_id)


async def test_quality_sends_each_problem_image_with_its_gold_sub_questions(tmp_path, monkeypatch):
    from guard.engine import vllm_engine

    engines: list[_ImageRecordingEngine] = []
    monkeypatch.setattr(
        vllm_engine, "VllmEngine", lambda *a, **kw: engines.append(_ImageRecordingEngine()) or engines[-1]
    )
    from benchmarks.quality import build_parser

    args = build_parser().parse_args([
        "--data", "visual:gold", "--data-dir", str(tmp_path), "--limit", "4", "--out", str(tmp_path),
        "--model", str(tmp_path), "--num-paths", "2", "--max-tokens", "16", "--seed", "0", "--concurrency", "2",
    ])
    out = await quality.sample_all(args, [("visual", "gold")])
    recs = out["visual:gold"]
    assert sorted(recs) == [f"visual-s0-{i:04d}" for i in range(4)]
    assert [recs[p.id].sub_questions for p in visual.generate(4)] == [
        list(p.sub_questions) for p in visual.generate(4)
    ]
    [engine] = engines
    assert engine.prompt_images and all(len(images) == 1 for images in engine.prompt_images)
    assert {images[0].size for images in engine.prompt_images} == {(scenes.IMAGE_SIZE_PX,) * 2}
