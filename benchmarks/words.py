"""Synthetic arithmetic word problems with gold step expressions, intermediate values and sub-questions.

Each shape in SHAPES is a template: the problem text (its last sentence asks the question), how its
numbers are drawn, and its steps, each an expression over numbers of the text and earlier results
("{start} + {bought}", then "{s1} - {gave}") with the question a person would ask for that value.
Every value is a positive integer below MAX_VALUE and every division is exact.

Gold sub-questions are the steps before the last, so an N-step problem has N - 1 of them and none
restates the question. One-step problems have none: the only other quantities in them are stated
in the text, and a sub-question that reads a number back checks reading, not reasoning (every path
agrees on it, so it would dilute the support without telling right paths from wrong ones).

Problem `i` of a set depends on nothing else, so any `--limit` is a prefix of the same set. As a
dataset: `words` (shapes in turn, seed 0), `words@7`, `words-2step`, `words-3step@7` ...

    python -m benchmarks.words --count 5 --steps 3     # print problems with their steps to look at
"""

from __future__ import annotations

import argparse
import ast
import operator
import random
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.problem import Problem

DEFAULT_COUNT = 300
DEFAULT_SEED = 0
MAX_STEPS = 4
MAX_VALUE = 10_000  # every value stays below this, so a small model has a fair chance
_MAX_DRAWS = 1000

# (name, subject pronoun); name2 and name3 never need a pronoun.
NAMES = (
    ("Tom", "he"), ("Maya", "she"), ("Ravi", "he"), ("Lena", "she"), ("Omar", "he"), ("Sofia", "she"),
    ("Ken", "he"), ("Aisha", "she"), ("Luis", "he"), ("Priya", "she"), ("Jonas", "he"), ("Mei", "she"),
)
PRONOUNS = {"he": ("he", "him", "his"), "she": ("she", "her", "her")}
RELATIVES = ("sister", "brother", "cousin", "neighbour", "uncle")  # never "friend": shares go to friends
# (singular, plural) of things with a price.
ITEMS = (
    ("notebook", "notebooks"), ("pen", "pens"), ("ticket", "tickets"), ("sandwich", "sandwiches"),
    ("toy car", "toy cars"), ("mug", "mugs"), ("plant", "plants"), ("comic book", "comic books"),
)
FRUIT = ("apples", "oranges", "pears", "plums", "lemons")
COLLECTIBLES = ("stickers", "marbles", "cards", "stamps", "shells", "beads")
BAKED = ("muffins", "cookies", "cupcakes", "bread rolls")
VEHICLES = ("train", "bus", "car", "truck")
# (per-hour unit, unit of distance)
UNITS = (("km", "kilometres"), ("miles", "miles"))
PURCHASES = ("lunch", "a book", "a gift", "bus fares", "a new cap")
# (singular, plural) of who gets a share.
SHARERS = (("friend", "friends"), ("classmate", "classmates"), ("child", "children"), ("teammate", "teammates"))


@dataclass(frozen=True)
class Shape:
    """One problem template. Text, steps and answer are `str.format` templates over the drawn numbers,
    the chosen words and the earlier step values `s1`, `s2`, ..."""

    name: str
    draw: Callable[[random.Random], dict[str, int]]
    text: str
    # (expression, sub-question) for every step before the last.
    steps: tuple[tuple[str, str], ...]
    answer: str  # the last step's expression
    # Word slot -> alternatives, one picked per problem (on top of names, pronouns, items, relative).
    choices: dict[str, tuple] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.steps) + 1


@dataclass(frozen=True)
class Step:
    expression: str  # integers and + - * / only, e.g. "12 + 7"
    value: int
    sub_question: str  # how a person asks for this value; "" for the last step (the question itself)


@dataclass(frozen=True)
class WordProblem:
    id: str
    shape: str
    question: str
    steps: tuple[Step, ...]

    @property
    def answer(self) -> int:
        return self.steps[-1].value

    @property
    def sub_questions(self) -> tuple[str, ...]:
        return tuple(s.sub_question for s in self.steps[:-1])

    @property
    def sub_answers(self) -> tuple[str, ...]:
        return tuple(str(s.value) for s in self.steps[:-1])

    def to_problem(self) -> Problem:
        return Problem(self.id, self.question, str(self.answer), self.sub_questions, self.sub_answers)


# -- a safe evaluator for step expressions ---------------------------------------------------------

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate(expression: str) -> int:
    """Value of an expression of integers, + - * / and brackets; a division must be exact."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {expression!r}: {exc.msg}") from None
    return _evaluate(tree.body, expression)


def _evaluate(node: ast.AST, expression: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, expression), _evaluate(node.right, expression)
        if isinstance(node.op, ast.Div):
            if right == 0 or left % right:
                raise ValueError(f"expression {expression!r}: {left} / {right} is not a whole number")
            return left // right
        if type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](left, right)
    raise ValueError(f"expression {expression!r}: only integers, + - * / and brackets are allowed")


# -- number draws (constructed so that divisions come out exact) -----------------------------------


def _add_more(rng: random.Random) -> dict[str, int]:
    return {"start": rng.randint(5, 80), "more": rng.randint(2, 60)}


def _give_away(rng: random.Random) -> dict[str, int]:
    gave = rng.randint(2, 40)
    return {"gave": gave, "start": gave + rng.randint(1, 80)}


def _price_count(rng: random.Random) -> dict[str, int]:
    return {"price": rng.randint(2, 25), "count": rng.randint(2, 12)}


def _share(rng: random.Random) -> dict[str, int]:
    each, groups = rng.randint(2, 15), rng.randint(2, 9)
    return {"total": each * groups, "groups": groups}


def _speed_hours(rng: random.Random) -> dict[str, int]:
    return {"speed": 5 * rng.randint(4, 18), "hours": rng.randint(2, 8)}


def _base(rng: random.Random) -> dict[str, int]:
    return {"base": rng.randint(4, 60)}


def _base_extra(rng: random.Random) -> dict[str, int]:
    return {"base": rng.randint(4, 60), "extra": rng.randint(2, 20)}


def _buy_give(rng: random.Random) -> dict[str, int]:
    start, bought = rng.randint(3, 50), rng.randint(2, 40)
    return {"start": start, "bought": bought, "gave": rng.randint(1, start + bought - 1)}


def _change(rng: random.Random) -> dict[str, int]:
    count, price = rng.randint(2, 6), rng.randint(2, 15)
    return {"count": count, "price": price, "paid": _bill_above(rng, count * price)}


def _bill_above(rng: random.Random, cost: int) -> int:
    """A banknote that covers `cost`: the smallest that does, or sometimes the next one up."""
    bills = [b for b in (10, 20, 50, 100, 200) if b > cost]
    return bills[0] if len(bills) == 1 or rng.random() < 0.7 else bills[1]


def _two_parts_then_share(rng: random.Random) -> dict[str, int]:
    each, boxes = rng.randint(3, 12), rng.randint(2, 8)
    total = each * boxes
    first = rng.randint(1, total - 1)
    return {"first": first, "second": total - first, "boxes": boxes}


def _wage_spend(rng: random.Random) -> dict[str, int]:
    rate, hours = rng.randint(6, 20), rng.randint(2, 8)
    return {"rate": rate, "hours": hours, "spent": rng.randint(1, rate * hours - 1)}


def _three_scores(rng: random.Random) -> dict[str, int]:
    a, b, c = rng.randint(40, 100), rng.randint(40, 100), rng.randint(40, 98)
    c += -(a + b + c) % 3  # the average is a whole number
    return {"a": a, "b": b, "c": c, "n": 3}


def _tables_leave(rng: random.Random) -> dict[str, int]:
    groups, per = rng.randint(3, 12), rng.randint(2, 8)
    return {"groups": groups, "per": per, "left": rng.randint(1, groups * per * 2 // 3)}


def _morning_afternoon(rng: random.Random) -> dict[str, int]:
    morning, afternoon = rng.randint(5, 60), rng.randint(5, 60)
    return {"morning": morning, "afternoon": afternoon, "start": morning + afternoon + rng.randint(1, 150)}


def _recipe(rng: random.Random) -> dict[str, int]:
    batch, batches = rng.randint(4, 12), rng.randint(2, 6)
    return {"batch": batch, "target": batch * batches, "per_batch": rng.randint(2, 5)}


def _printing(rng: random.Random) -> dict[str, int]:
    rate, copies, minutes_per_copy = rng.randint(4, 15), rng.randint(2, 6), rng.randint(1, 4)
    return {"rate": rate, "copies": copies, "pages": rate * minutes_per_copy}


def _buy_give_share(rng: random.Random) -> dict[str, int]:
    each, friends, gave = rng.randint(2, 12), rng.randint(2, 6), rng.randint(1, 15)
    total = each * friends + gave
    start = rng.randint(1, total - 1)
    return {"start": start, "bought": total - start, "gave": gave, "friends": friends}


def _two_pack_sizes(rng: random.Random) -> dict[str, int]:
    big, small = rng.sample(range(4, 25), 2)
    return {"big": big, "small": small, "nbig": rng.randint(2, 9), "nsmall": rng.randint(2, 9)}


def _two_legs(rng: random.Random) -> dict[str, int]:
    return {"v1": 5 * rng.randint(4, 18), "h1": rng.randint(2, 5), "v2": 5 * rng.randint(4, 18),
            "h2": rng.randint(2, 5)}


def _spend_spend_earn(rng: random.Random) -> dict[str, int]:
    spent1, spent2 = rng.randint(3, 60), rng.randint(3, 60)
    return {"start": spent1 + spent2 + rng.randint(1, 100), "spent1": spent1, "spent2": spent2,
            "earned": rng.randint(5, 80)}


def _eggs(rng: random.Random) -> dict[str, int]:
    carton, days = rng.choice((6, 10, 12)), rng.randint(2, 7)
    # Whole cartons only: the eggs a day times the days is a multiple of the carton size.
    per_day = rng.randint(2, 8) * carton // _gcd(carton, days)
    return {"carton": carton, "days": days, "per_day": per_day, "price": rng.randint(2, 6)}


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _savings(rng: random.Random) -> dict[str, int]:
    weekly, weeks, gift = rng.randint(5, 25), rng.randint(2, 10), rng.randint(5, 50)
    return {"weekly": weekly, "weeks": weeks, "gift": gift, "cost": weekly * weeks + gift + rng.randint(5, 120)}


def _weekend_work(rng: random.Random) -> dict[str, int]:
    h1, h2, rate = rng.randint(2, 8), rng.randint(2, 8), rng.randint(6, 18)
    return {"h1": h1, "h2": h2, "rate": rate, "spent": rng.randint(1, (h1 + h2) * rate - 1)}


def _two_purchases(rng: random.Random) -> dict[str, int]:
    n1, p1, n2, p2 = rng.randint(2, 5), rng.randint(2, 15), rng.randint(2, 5), rng.randint(2, 15)
    return {"n1": n1, "p1": p1, "n2": n2, "p2": p2, "paid": _bill_above(rng, n1 * p1 + n2 * p2)}


def _packs_into_groups(rng: random.Random) -> dict[str, int]:
    group = rng.randint(3, 8)
    n1, p1, n2 = rng.randint(2, 6), rng.randint(4, 15), rng.randint(2, 6)
    # The second pack size makes the total a multiple of the group size.
    p2 = _choice_or_zero(rng, [p for p in range(4, 25) if p != p1 and (n1 * p1 + n2 * p) % group == 0])
    return {"n1": n1, "p1": p1, "n2": n2, "p2": p2, "group": group}


def _trip_left(rng: random.Random) -> dict[str, int]:
    legs = _two_legs(rng)
    covered = legs["v1"] * legs["h1"] + legs["v2"] * legs["h2"]
    return legs | {"total": covered + 10 * rng.randint(1, 30)}


def _bags_give_share(rng: random.Random) -> dict[str, int]:
    start, bags, per_bag, friends = rng.randint(2, 30), rng.randint(2, 6), rng.randint(3, 12), rng.randint(2, 6)
    have = start + bags * per_bag
    # Give away whatever leaves a multiple of `friends`, at least one, and sometimes a few more.
    gave = (have % friends or friends) + friends * rng.randint(0, 2)
    if gave >= have:
        gave = have % friends or friends
    return {"start": start, "bags": bags, "per_bag": per_bag, "gave": gave, "friends": friends}


def _split_bill(rng: random.Random) -> dict[str, int]:
    people = rng.randint(2, 6)
    n1, p1, n2 = rng.randint(2, 5), rng.randint(6, 20), rng.randint(2, 8)
    p2 = _choice_or_zero(rng, [p for p in range(2, 8) if (n1 * p1 + n2 * p) % people == 0])
    return {"people": people, "n1": n1, "p1": p1, "n2": n2, "p2": p2}


def _choice_or_zero(rng: random.Random, options: list[int]) -> int:
    """One of `options`; 0 when there is none, which breaks the positive-values rule, so the problem
    is drawn again."""
    return rng.choice(options) if options else 0


# -- the shapes ------------------------------------------------------------------------------------

SHAPES: tuple[Shape, ...] = (
    # One step.
    Shape("add_more", _add_more,
          "{name} has {start} {things}. {He} {gets} {more} more {things}. How many {things} does {name} have now?",
          (), "{start} + {more}", {"things": FRUIT + COLLECTIBLES, "gets": ("buys", "gets", "is given")}),
    Shape("give_away", _give_away,
          "{name} had {start} {things} and gave {gave} of them to {his} {relative}. "
          "How many {things} does {name} have left?",
          (), "{start} - {gave}", {"things": COLLECTIBLES}),
    Shape("price_times_count", _price_count,
          "One {item[0]} costs {price} dollars. How many dollars do {count} {item[1]} cost?",
          (), "{price} * {count}"),
    Shape("share_equally", _share,
          "{name} shares {total} {things} equally among {groups} {sharer[1]}. How many {things} does each {sharer[0]} get?",
          (), "{total} / {groups}", {"things": BAKED + COLLECTIBLES, "sharer": SHARERS}),
    Shape("speed_times_hours", _speed_hours,
          "A {vehicle} travels at {speed} {unit[0]} per hour. How many {unit[1]} does it travel in {hours} hours?",
          (), "{speed} * {hours}", {"vehicle": VEHICLES, "unit": UNITS}),
    Shape("twice_as_many", _base,
          "{name} has {base} {things}. {name2} has twice as many {things} as {name}. "
          "How many {things} does {name2} have?",
          (), "2 * {base}", {"things": COLLECTIBLES}),
    # Two steps.
    Shape("buy_then_give", _buy_give,
          "{name} had {start} {things}. {He} bought {bought} more, then gave {gave} to {his} {relative}. "
          "How many {things} does {name} have now?",
          (("{start} + {bought}", "How many {things} did {name} have after buying more?"),),
          "{s1} - {gave}", {"things": FRUIT}),
    Shape("change_from_payment", _change,
          "{name} buys {count} {item[1]} at {price} dollars each and pays with a {paid}-dollar bill. "
          "How much change does {he} get, in dollars?",
          (("{count} * {price}", "How many dollars do the {item[1]} cost altogether?"),),
          "{paid} - {s1}"),
    Shape("more_than_together", _base_extra,
          "{name} has {base} {things}. {name2} has {extra} more {things} than {name}. "
          "How many {things} do they have together?",
          (("{base} + {extra}", "How many {things} does {name2} have?"),),
          "{base} + {s1}", {"things": COLLECTIBLES + FRUIT}),
    Shape("twice_then_total", _base,
          "{name} has {base} {things}. {name2} has twice as many. "
          "How many {things} do {name} and {name2} have altogether?",
          (("2 * {base}", "How many {things} does {name2} have?"),),
          "{base} + {s1}", {"things": COLLECTIBLES}),
    Shape("bake_then_pack", _two_parts_then_share,
          "{name} baked {first} {things} in the morning and {second} in the afternoon. "
          "{He} packed all of them equally into {boxes} boxes. How many {things} went into each box?",
          (("{first} + {second}", "How many {things} did {name} bake that day?"),),
          "{s1} / {boxes}", {"things": BAKED}),
    Shape("wage_then_spend", _wage_spend,
          "{name} earns {rate} dollars an hour and works for {hours} hours. {He} then spends {spent} dollars "
          "on {purchase}. How many dollars of {his} pay does {he} have left?",
          (("{rate} * {hours}", "How many dollars did {name} earn?"),),
          "{s1} - {spent}", {"purchase": PURCHASES}),
    Shape("average_score", _three_scores,
          "{name} scored {a}, {b} and {c} points in {n} {event[1]}. What was {his} average score per {event[0]}?",
          (("{a} + {b} + {c}", "How many points did {name} score over all {n} {event[1]}?"),),
          "{s1} / {n}", {"event": (("game", "games"), ("test", "tests"), ("quiz", "quizzes"), ("round", "rounds"))}),
    Shape("seats_then_leave", _tables_leave,
          "A {room[0]} has {groups} {room[2]}s with {per} {room[1]} at each {room[2]}. {left} {room[1]} leave "
          "early. How many {room[1]} are still in the {room[0]}?",
          (("{groups} * {per}", "How many {room[1]} were in the {room[0]} at the start?"),),
          "{s1} - {left}",
          {"room": (("classroom", "students", "table"), ("restaurant", "guests", "table"),
                    ("workshop", "people", "desk"), ("hall", "players", "table"))}),
    Shape("two_sales_left", _morning_afternoon,
          "A {shop[0]} had {start} {shop[1]}. It {shop[2]} {morning} {shop[1]} in the morning and {afternoon} "
          "in the afternoon. How many {shop[1]} does the {shop[0]} have left?",
          (("{morning} + {afternoon}", "How many {shop[1]} did the {shop[0]} {shop[3]} that day?"),),
          "{start} - {s1}",
          {"shop": (("library", "books", "lent out", "lend out"), ("shop", "shirts", "sold", "sell"),
                    ("bakery", "loaves", "sold", "sell"), ("garden centre", "plants", "sold", "sell"))}),
    Shape("recipe_scale", _recipe,
          "A recipe uses {per_batch} {ingredient} to make {batch} {food}. "
          "How many {ingredient} are needed to make {target} {food}?",
          (("{target} / {batch}", "How many times must the recipe be made?"),),
          "{s1} * {per_batch}",
          {"ingredient": ("cups of flour", "eggs", "spoons of sugar"), "food": ("pancakes", "waffles", "muffins")}),
    Shape("pages_per_minute", _printing,
          "A printer prints {rate} pages per minute. How many minutes does it take to print {copies} copies "
          "of a {pages}-page report?",
          (("{copies} * {pages}", "How many pages are there to print in all?"),),
          "{s1} / {rate}"),
    # Three steps.
    Shape("buy_give_share", _buy_give_share,
          "{name} had {start} {things}. {He} bought {bought} more and gave {gave} to {his} {relative}. "
          "{He} shared the rest equally among {friends} friends. How many {things} did each friend get?",
          (("{start} + {bought}", "How many {things} did {name} have after buying more?"),
           ("{s1} - {gave}", "How many {things} were left after {name} gave some to {his} {relative}?")),
          "{s2} / {friends}", {"things": FRUIT}),
    Shape("two_pack_sizes", _two_pack_sizes,
          "A shop sells {things} in packs of {big} and packs of {small}. {name} buys {nbig} packs of {big} "
          "and {nsmall} packs of {small}. How many {things} does {name} buy in total?",
          (("{nbig} * {big}", "How many {things} are in the packs of {big} that {name} buys?"),
           ("{nsmall} * {small}", "How many {things} are in the packs of {small} that {name} buys?")),
          "{s1} + {s2}", {"things": ("pencils", "batteries", "crayons", "candles")}),
    Shape("two_legs_distance", _two_legs,
          "A {vehicle} travels at {v1} {unit[0]} per hour for {h1} hours, then at {v2} {unit[0]} per hour "
          "for {h2} hours. How many {unit[1]} does it travel in all?",
          (("{v1} * {h1}", "How many {unit[1]} does the {vehicle} cover in the first part of the trip?"),
           ("{v2} * {h2}", "How many {unit[1]} does the {vehicle} cover in the second part of the trip?")),
          "{s1} + {s2}", {"vehicle": VEHICLES, "unit": UNITS}),
    Shape("three_people", _base_extra,
          "{name} has {base} {things}. {name2} has {extra} more than {name}, and {name3} has twice as many as "
          "{name2}. How many {things} do the three of them have together?",
          (("{base} + {extra}", "How many {things} does {name2} have?"),
           ("2 * {s1}", "How many {things} does {name3} have?")),
          "{base} + {s1} + {s2}", {"things": COLLECTIBLES}),
    Shape("spend_spend_earn", _spend_spend_earn,
          "{name} had {start} dollars. {He} spent {spent1} dollars on a {item[0]}, then {spent2} dollars on "
          "a {item2[0]}, and later earned {earned} dollars {job}. How many dollars does {name} have now?",
          (("{start} - {spent1}", "How many dollars did {name} have after buying the {item[0]}?"),
           ("{s1} - {spent2}", "How many dollars did {name} have after buying the {item2[0]} as well?")),
          "{s2} + {earned}", {"job": ("mowing lawns", "walking dogs", "washing cars", "selling lemonade")}),
    Shape("eggs_in_cartons", _eggs,
          "{name}'s hens lay {per_day} eggs a day. After {days} days {he} packs all the eggs into cartons of "
          "{carton} and sells each carton for {price} dollars. How many dollars does {he} get?",
          (("{per_day} * {days}", "How many eggs did the hens lay over the {days} days?"),
           ("{s1} / {carton}", "How many cartons did {name} fill?")),
          "{s2} * {price}"),
    Shape("savings_goal", _savings,
          "{name} wants a {goal} that costs {cost} dollars. {He} saves {weekly} dollars a week for {weeks} weeks, "
          "and {his} {relative} gives {him} {gift} dollars. How many more dollars does {name} need?",
          (("{weekly} * {weeks}", "How many dollars did {name} save over the {weeks} weeks?"),
           ("{s1} + {gift}", "How many dollars did {name} have after the gift?")),
          "{cost} - {s2}", {"goal": ("bike", "guitar", "tablet", "tent", "skateboard")}),
    Shape("weekend_pay", _weekend_work,
          "{name} works {h1} hours on Saturday and {h2} hours on Sunday. {He} is paid {rate} dollars an hour "
          "and spends {spent} dollars of it on {purchase}. How many dollars does {he} have left?",
          (("{h1} + {h2}", "How many hours did {name} work over the weekend?"),
           ("{s1} * {rate}", "How many dollars did {name} earn over the weekend?")),
          "{s2} - {spent}", {"purchase": PURCHASES}),
    # Four steps.
    Shape("two_purchases_change", _two_purchases,
          "{name} buys {n1} {item[1]} at {p1} dollars each and {n2} {item2[1]} at {p2} dollars each. "
          "{He} pays with a {paid}-dollar bill. How much change does {he} get, in dollars?",
          (("{n1} * {p1}", "How many dollars do the {item[1]} cost?"),
           ("{n2} * {p2}", "How many dollars do the {item2[1]} cost?"),
           ("{s1} + {s2}", "How many dollars does {name} spend altogether?")),
          "{paid} - {s3}"),
    Shape("packs_into_groups", _packs_into_groups,
          "{name} buys {n1} packs of {p1} {pack[0]} and {n2} packs of {p2} {pack[0]}. {He} puts all the "
          "{pack[0]} into {pack[1]} of {group}. How many {pack[1]} does {he} make?",
          (("{n1} * {p1}", "How many {pack[0]} are in the packs of {p1}?"),
           ("{n2} * {p2}", "How many {pack[0]} are in the packs of {p2}?"),
           ("{s1} + {s2}", "How many {pack[0]} did {name} buy in all?")),
          "{s3} / {group}",
          {"pack": (("balloons", "bunches"), ("flowers", "bouquets"), ("sticks", "bundles"),
                    ("candies", "party bags"))}),
    Shape("trip_left", _trip_left,
          "A {vehicle} has to cover {total} {unit[1]}. It drives {h1} hours at {v1} {unit[0]} per hour, then "
          "{h2} hours at {v2} {unit[0]} per hour. How many {unit[1]} are still left to go?",
          (("{v1} * {h1}", "How many {unit[1]} did the {vehicle} cover at {v1} {unit[0]} per hour?"),
           ("{v2} * {h2}", "How many {unit[1]} did the {vehicle} cover at {v2} {unit[0]} per hour?"),
           ("{s1} + {s2}", "How many {unit[1]} has the {vehicle} covered so far?")),
          "{total} - {s3}", {"vehicle": ("bus", "car", "truck", "van"), "unit": UNITS}),
    Shape("bags_give_share", _bags_give_share,
          "{name} had {start} {things}. {He} bought {bags} bags with {per_bag} {things} in each, then gave "
          "{gave} {things} to {his} {relative}. {He} shared the rest equally among {friends} friends. "
          "How many {things} did each friend get?",
          (("{bags} * {per_bag}", "How many {things} were in the bags {name} bought?"),
           ("{start} + {s1}", "How many {things} did {name} have after buying the bags?"),
           ("{s2} - {gave}", "How many {things} were left after {name} gave some to {his} {relative}?")),
          "{s3} / {friends}", {"things": FRUIT + COLLECTIBLES}),
    Shape("split_the_bill", _split_bill,
          "A group of {people} friends order {n1} pizzas at {p1} dollars each and {n2} drinks at {p2} dollars each. "
          "They split the bill equally. How many dollars does each friend pay?",
          (("{n1} * {p1}", "How many dollars do the pizzas cost?"),
           ("{n2} * {p2}", "How many dollars do the drinks cost?"),
           ("{s1} + {s2}", "How many dollars is the whole bill?")),
          "{s3} / {people}"),
)


def shapes_with(num_steps: int | None = None) -> tuple[Shape, ...]:
    """The shapes of `num_steps` steps, or all of them."""
    if num_steps is not None and not 1 <= num_steps <= MAX_STEPS:
        raise ValueError(f"num_steps {num_steps}: must be in 1..{MAX_STEPS}")
    return tuple(s for s in SHAPES if num_steps is None or s.num_steps == num_steps)


# -- generation ------------------------------------------------------------------------------------


def _words(shape: Shape, rng: random.Random) -> dict[str, object]:
    (name, pronoun), (name2, _), (name3, _) = rng.sample(NAMES, 3)
    he, him, his = PRONOUNS[pronoun]
    item, item2 = rng.sample(ITEMS, 2)
    chosen = {slot: rng.choice(options) for slot, options in shape.choices.items()}
    return {"name": name, "name2": name2, "name3": name3, "he": he, "He": he.capitalize(), "him": him,
            "his": his, "item": item, "item2": item2, "relative": rng.choice(RELATIVES)} | chosen


def _build(shape: Shape, rng: random.Random) -> tuple[str, tuple[Step, ...]] | None:
    """Problem text and steps from one draw; None when a value breaks a rule (then draw again)."""
    context = _words(shape, rng) | shape.draw(rng)
    steps = []
    try:
        for k, (expression, sub_question) in enumerate((*shape.steps, (shape.answer, "")), start=1):
            expression = expression.format(**context)
            context[f"s{k}"] = value = evaluate(expression)
            steps.append(Step(expression, value, sub_question.format(**context)))
    except ValueError:  # an inexact division
        return None
    values = [s.value for s in steps]
    if not all(0 < v < MAX_VALUE for v in values) or values[-1] in values[:-1]:
        # An intermediate equal to the answer would look to the guard like an echo of the question.
        return None
    return shape.text.format(**context), tuple(steps)


def generate_one(index: int, seed: int = DEFAULT_SEED, num_steps: int | None = None) -> WordProblem:
    """Problem `index` of the set named by (seed, num_steps); the set's shapes are taken in turn."""
    shapes = shapes_with(num_steps)
    shape = shapes[index % len(shapes)]
    rng = random.Random(f"trace-guard-words:{seed}:{num_steps or 'mixed'}:{index}")
    for _ in range(_MAX_DRAWS):
        built = _build(shape, rng)
        if built is not None:
            question, steps = built
            tag = f"-{num_steps}step" if num_steps else ""
            return WordProblem(f"words{tag}-s{seed}-{index:04d}", shape.name, question, steps)
    raise RuntimeError(f"shape {shape.name}: no valid draw in {_MAX_DRAWS} tries")


def generate(num_problems: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED, num_steps: int | None = None
             ) -> list[WordProblem]:
    return [generate_one(i, seed, num_steps) for i in range(num_problems)]


_NAME_RE = re.compile(r"words(?:-(?P<steps>\d+)step)?(?:@(?P<seed>\d+))?")


def load(name: str, limit: int | None = None) -> list[Problem]:
    """Dataset `words[-Nstep][@SEED]` as Problems: `limit` problems, else DEFAULT_COUNT."""
    match = _NAME_RE.fullmatch(name)
    if match is None or (match["steps"] and not 1 <= int(match["steps"]) <= MAX_STEPS):
        raise ValueError(f"dataset {name!r}: expected words[-Nstep][@SEED] with N in 1..{MAX_STEPS}")
    num_steps = int(match["steps"]) if match["steps"] else None
    seed = int(match["seed"]) if match["seed"] else DEFAULT_SEED
    return [p.to_problem() for p in generate(DEFAULT_COUNT if limit is None else limit, seed, num_steps)]


def describe(problem: WordProblem) -> str:
    """The problem, its steps (sub-question, value, expression) and answer, for a person to read."""
    lines = [f"{problem.id}  [{problem.shape}, {len(problem.steps)} step(s)]", f"  {problem.question}"]
    for k, step in enumerate(problem.steps[:-1], start=1):
        lines.append(f"  {k}. {step.sub_question}  -> {step.value}    [{step.expression}]")
    last = problem.steps[-1]
    lines.append(f"  answer: {last.value}    [{last.expression}]")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--steps", type=int, choices=range(1, MAX_STEPS + 1), help="N-step problems only")
    p.add_argument("--start", type=int, default=0, help="index of the first problem to print")
    args = p.parse_args(argv)
    problems = [generate_one(i, args.seed, args.steps) for i in range(args.start, args.start + args.count)]
    print("\n\n".join(describe(problem) for problem in problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
