"""Synthetic visual problems with known answers: seeded Pillow scenes, questions and gold sub-questions.

Four tasks, each with gold sub-questions whose values determine the answer:

    count     "How many red squares are in the image?"          (left half, right half)
    compare   "Are there more blue circles than green triangles?" (count of each)
    numbers   "What is the sum of the two numbers shown?"         (each number)
    scene     CLEVR-like objects with colour, shape and size: relations, attribute filters

Problem `i` of a seed depends on nothing else, so any `--limit` is a prefix of the same set. As a
dataset: `visual` (tasks in turn, seed 0), `visual-count`, `visual@7`, `visual-scene@7` ...

    python -m benchmarks.visual --out /tmp/visual --count 20     # PNGs + problems.jsonl to look at
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.problem import Problem
from benchmarks.scenes import (
    COLOURS,
    GAP_PX,
    IMAGE_SIZE_PX,
    NUMBER_HALF_SIDE_PX,
    SCENE_SIZES,
    SHAPES,
    Layout,
    Number,
    Scene,
    Shape,
    count_shapes,
    render,
)

DEFAULT_COUNT = 200
DEFAULT_SEED = 0


@dataclass(frozen=True)
class VisualProblem:
    id: str
    task: str
    template: str
    question: str
    answer: str
    sub_questions: tuple[str, ...]
    sub_answers: tuple[str, ...]
    scene: Scene
    png: bytes

    def to_problem(self) -> Problem:
        images = ((self.png, "image/png"),)
        return Problem(self.id, self.question, self.answer, self.sub_questions, self.sub_answers, images)


@dataclass(frozen=True)
class Built:
    """What a task builder makes: the scene, and questions with their gold answers."""

    scene: Scene
    template: str
    question: str
    answer: str | int
    steps: list[tuple[str, str | int]]  # (sub-question, gold value), in order


def _kind(colour: str, shape: str) -> str:
    return f"{colour} {shape}s"


def _other_kinds(rng: random.Random, exclude: list, low: int, high: int) -> list[tuple[str, str]]:
    """Distractor (colour, shape) pairs, none of them an excluded kind."""
    others = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in exclude]
    return [rng.choice(others) for _ in range(rng.randint(low, high))]


def _count_task(rng: random.Random) -> Built:
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    layout = Layout(rng)
    shapes = [layout.shape(shape, colour, "medium") for _ in range(rng.randint(1, 6))]
    shapes += [layout.shape(s, c, "medium") for c, s in _other_kinds(rng, [(colour, shape)], 2, 7)]
    scene, what = Scene(IMAGE_SIZE_PX, tuple(shapes)), _kind(colour, shape)
    halves = [(side, count_shapes(scene, colour, shape, half=side)) for side in ("left", "right")]
    steps = [(f"How many {what} are in the {side} half of the image?", n) for side, n in halves]
    answer = count_shapes(scene, colour, shape)
    return Built(scene, "count", f"How many {what} are in the image?", answer, steps)


def _compare_task(rng: random.Random) -> Built:
    (ca, sa), (cb, sb) = kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], 2)
    a, b = rng.sample(range(1, 7), 2)  # never equal: "more" always has a clear answer
    difference = rng.random() < 0.5
    if difference and a < b:
        a, b = b, a
    layout = Layout(rng)
    shapes = [layout.shape(sa, ca, "medium") for _ in range(a)]
    shapes += [layout.shape(sb, cb, "medium") for _ in range(b)]
    shapes += [layout.shape(s, c, "medium") for c, s in _other_kinds(rng, kinds, 0, 4)]
    scene, first, second = Scene(IMAGE_SIZE_PX, tuple(shapes)), _kind(ca, sa), _kind(cb, sb)
    na, nb = count_shapes(scene, ca, sa), count_shapes(scene, cb, sb)
    steps = [(f"How many {first} are there?", na), (f"How many {second} are there?", nb)]
    if difference:
        question = f"How many more {first} than {second} are there?"
        return Built(scene, "compare_difference", question, na - nb, steps)
    question = f"Are there more {first} than {second} in the image?"
    return Built(scene, "compare_more", question, _yes_no(na > nb), steps)


def _numbers_scene(rng: random.Random, count: int, low: int, high: int) -> tuple[Scene, list[int]]:
    """`count` distinct numbers on cards, one per column; also their values from left to right."""
    layout, column_px, half = Layout(rng, split_midline=False), IMAGE_SIZE_PX // count, NUMBER_HALF_SIDE_PX
    numbers = []
    for i, value in enumerate(rng.sample(range(low, high + 1), count)):
        # Each card stays in its own column, so "left", "middle" and "right" are never a judgement call.
        x_range = (i * column_px + half + GAP_PX, (i + 1) * column_px - half - GAP_PX)
        numbers.append(Number(value, *layout.place(half, x_range), half))
    return Scene(IMAGE_SIZE_PX, numbers=tuple(numbers)), [n.value for n in numbers]


def _numbers_sum(rng: random.Random) -> Built:
    scene, (left, right) = _numbers_scene(rng, 2, 10, 99)
    steps = [("What is the number on the left?", left), ("What is the number on the right?", right)]
    return Built(scene, "numbers_sum", "What is the sum of the two numbers shown?", left + right, steps)


def _numbers_product(rng: random.Random) -> Built:
    scene, (left, right) = _numbers_scene(rng, 2, 2, 12)
    steps = [("What is the number on the left?", left), ("What is the number on the right?", right)]
    question = "What is the product of the two numbers shown?"
    return Built(scene, "numbers_product", question, left * right, steps)


def _numbers_difference(rng: random.Random) -> Built:
    scene, values = _numbers_scene(rng, 2, 10, 99)
    big, small = max(values), min(values)
    steps = [("What is the larger number shown?", big), ("What is the smaller number shown?", small)]
    question = "What is the larger number minus the smaller number?"
    return Built(scene, "numbers_difference", question, big - small, steps)


def _numbers_sum3(rng: random.Random) -> Built:
    scene, values = _numbers_scene(rng, 3, 1, 50)
    places = ("leftmost", "middle", "rightmost")
    steps = [(f"What is the {where} number?", v) for where, v in zip(places, values)]
    return Built(scene, "numbers_sum3", "What is the sum of the three numbers shown?", sum(values), steps)


def _scene_shapes(rng: random.Random, layout: Layout, shapes: list[Shape],
                  avoid: Callable[[str, str, str], bool] = lambda colour, shape, size: False) -> Scene:
    """Fill up to 6-9 random objects of two sizes, none for which `avoid(colour, shape, size)` holds."""
    num_shapes = rng.randint(6, 9)
    while len(shapes) < num_shapes:
        colour, shape, size = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(SCENE_SIZES)
        if not avoid(colour, shape, size):
            shapes.append(layout.shape(shape, colour, size))
    return Scene(IMAGE_SIZE_PX, tuple(shapes))


def _scene_relate(rng: random.Random) -> Built:
    layout = Layout(rng)
    # Away from the edges, so there are objects on both sides; nothing shares its columns.
    middle = (IMAGE_SIZE_PX // 4, 3 * IMAGE_SIZE_PX // 4)
    anchor = layout.shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SCENE_SIZES), middle)
    layout.block_column_of(anchor.box)
    # The only object of its colour and shape, so "the red circle" names one object.
    scene = _scene_shapes(rng, layout, [anchor], lambda c, s, z: (c, s) == (anchor.colour, anchor.shape))
    side, size = rng.choice(("left", "right")), rng.choice(SCENE_SIZES)
    other = "small" if size == "large" else "large"
    near = [s for s in scene.shapes if s is not anchor and (s.x < anchor.x) == (side == "left")]
    n_all, n_other = len(near), sum(s.size == other for s in near)
    of = f"{side} of the {anchor.colour} {anchor.shape}"
    steps = [(f"How many objects are {of}?", n_all), (f"How many {other} objects are {of}?", n_other)]
    return Built(scene, "scene_relate", f"How many {size} objects are {of}?", n_all - n_other, steps)


def _scene_same_colour(rng: random.Random) -> Built:
    layout = Layout(rng)
    anchor = layout.shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SCENE_SIZES))
    # The only object of its size and shape, so "the large square" names one object.
    scene = _scene_shapes(rng, layout, [anchor], lambda c, s, z: (z, s) == (anchor.size, anchor.shape))
    the, same = f"the {anchor.size} {anchor.shape}", count_shapes(scene, colour=anchor.colour)
    steps = [(f"What colour is {the}?", anchor.colour),
             (f"How many objects have the same colour as {the}, including {the} itself?", same)]
    question = f"How many other objects are the same colour as {the}?"
    return Built(scene, "scene_same_colour", question, same - 1, steps)


def _scene_or(rng: random.Random) -> Built:
    scene = _scene_shapes(rng, Layout(rng), [])
    colour, size = rng.choice(sorted({s.colour for s in scene.shapes})), rng.choice(SCENE_SIZES)
    a, b = count_shapes(scene, colour=colour), count_shapes(scene, size=size)
    both = count_shapes(scene, colour=colour, size=size)
    steps = [(f"How many {colour} objects are there?", a), (f"How many {size} objects are there?", b),
             (f"How many {size} {colour} objects are there?", both)]
    question = f"How many objects are {colour} or {size} (or both)?"
    return Built(scene, "scene_or", question, a + b - both, steps)


def _scene_more_size(rng: random.Random) -> Built:
    layout = Layout(rng)
    scene = _scene_shapes(rng, layout, [])
    small, large = count_shapes(scene, size="small"), count_shapes(scene, size="large")
    if small == large:  # an even split has no "more"; one more object settles it
        extra = layout.shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), "small")
        scene, small = Scene(IMAGE_SIZE_PX, (*scene.shapes, extra)), small + 1
    steps = [("How many small objects are there?", small), ("How many large objects are there?", large)]
    question = "Are there more small objects than large objects?"
    return Built(scene, "scene_more_size", question, _yes_no(small > large), steps)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _one_of(*builders: Callable[[random.Random], Built]) -> Callable[[random.Random], Built]:
    return lambda rng: rng.choice(builders)(rng)


# Task name -> builder; `visual` (no task) takes them in turn.
TASKS: dict[str, Callable[[random.Random], Built]] = {
    "count": _count_task,
    "compare": _compare_task,
    "numbers": _one_of(_numbers_sum, _numbers_difference, _numbers_product, _numbers_sum3),
    "scene": _one_of(_scene_relate, _scene_or, _scene_same_colour, _scene_more_size),
}


def generate_one(index: int, seed: int = DEFAULT_SEED, task: str | None = None) -> VisualProblem:
    """Problem `index` of the set named by (seed, task); task None takes the tasks in turn."""
    name = task or list(TASKS)[index % len(TASKS)]
    rng = random.Random(f"trace-guard-visual:{seed}:{task or 'mixed'}:{index}")
    built = TASKS[name](rng)
    return VisualProblem(
        f"visual{'-' + task if task else ''}-s{seed}-{index:04d}", name, built.template, built.question,
        str(built.answer), tuple(q for q, _ in built.steps), tuple(str(a) for _, a in built.steps),
        built.scene, render(built.scene),
    )


def generate(num_problems: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED, task: str | None = None
             ) -> list[VisualProblem]:
    if task is not None and task not in TASKS:
        raise ValueError(f"task {task!r}: must be one of {sorted(TASKS)}")
    return [generate_one(i, seed, task) for i in range(num_problems)]


_NAME_RE = re.compile(r"visual(?:-(?P<task>[a-z]+))?(?:@(?P<seed>\d+))?")


def load(name: str, limit: int | None = None) -> list[Problem]:
    """Dataset `visual[-TASK][@SEED]` as Problems: `limit` problems, else DEFAULT_COUNT."""
    match = _NAME_RE.fullmatch(name)
    if match is None or (match["task"] and match["task"] not in TASKS):
        raise ValueError(f"dataset {name!r}: expected visual[-TASK][@SEED] with TASK one of {sorted(TASKS)}")
    seed = int(match["seed"]) if match["seed"] else DEFAULT_SEED
    problems = generate(DEFAULT_COUNT if limit is None else limit, seed, match["task"])
    return [p.to_problem() for p in problems]


def to_row(problem: VisualProblem, image_file: str) -> dict:
    """One JSONL row in the format `benchmarks.datasets` reads, plus the scene for inspection."""
    return {
        "id": problem.id,
        "task": problem.task,
        "template": problem.template,
        "question": problem.question,
        "answer": problem.answer,
        "sub_questions": list(problem.sub_questions),
        "sub_answers": list(problem.sub_answers),
        "image_file": image_file,
        "images": [{"data": base64.b64encode(problem.png).decode("ascii"), "mime_type": "image/png"}],
        "scene": asdict(problem.scene),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="directory for the PNGs and problems.jsonl")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--task", choices=sorted(TASKS), help="one task only (default: all in turn)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    problems = generate(args.count, args.seed, args.task)
    with (args.out / "problems.jsonl").open("w") as f:
        for problem in problems:
            (args.out / f"{problem.id}.png").write_bytes(problem.png)
            f.write(json.dumps(to_row(problem, f"{problem.id}.png")) + "\n")
    print(f"{len(problems)} problems: {args.out}/problems.jsonl and {len(problems)} PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
