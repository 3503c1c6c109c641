"""Reasoning with long chains of thought (visual math, word problems), and plain text.

Every chain of thought is computed by the generator, so it is right by construction: it restates
the question, reads the numbers (from the image: shape counts, bar values or printed numbers; or
from the text), works one arithmetic step per line, each containing ``a op b = c`` (tests
re-evaluate them), re-checks the result in another order, and ends in ``\\boxed{N}`` (math-verify
checks it). The assistant reply is the long form, ``<think>\\n...\\n</think>\\n\\nThe answer is
\\boxed{N}.``; ``meta["short_reply"]`` is the same answer without the thinking (``The answer is
\\boxed{N}.``) and ``meta["short_answer"]`` the bare number, for short-answer training and for
studies that mix long and short chains of thought. ``meta["steps"]`` lists the lines of the chain.

Visual problems read their inputs from the image: shapes counted by colour, bar values, a table's
rows, printed numbers. Difficulty in [0, 1] scales the numbers, the objects, bars and rows to read
and the number of steps. Below ``EASY_BELOW`` (0.25) a share ``1 - difficulty / EASY_BELOW`` of the
problems are one-step warm-ups with single-digit numbers (add or take away two counts; for visual
math, count the red and the blue shapes and add them): the end of the scale a 5M-parameter model
can learn in the cpu profile's budget. From 0.25 up the problems are exactly as before.
"""

from __future__ import annotations

import dataclasses
import random

from PIL import Image, ImageDraw

from mimolab.data.world.charts import ITEMS, bar_chart, table
from mimolab.data.world.scene import Sample, assistant, canvas, easy, font, place, random_obj, render, user

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
Problem = tuple[Image.Image, str, list[str], int, dict]  # image, question, steps, answer, meta


def step(a: int, op: str, b: int) -> tuple[str, int]:
    """('a op b = c', c)."""
    value = OPS[op](a, b)
    return f"{a} {op} {b} = {value}", value


def short_reply(answer: int) -> str:
    return "The answer is \\boxed{" + str(answer) + "}."


REPLIES = ("long", "short")  # what a reasoning sample's reply holds: the chain of thought and the answer, or the answer
EMPTY_THINK = "<think>\n\n</think>\n\n"  # the chat template's no-think block (mimolab.tokenizer)


def with_reply(sample: Sample, reply: str) -> Sample:
    """``sample`` with the reply form ``reply``: "long" leaves it as generated; "short" gives a reasoning
    sample (one with ``meta["short_reply"]``) the empty think block and the answer alone, what the model
    writes in no-think mode, so the same problem and image train the answer without the chain. Other
    samples are returned as they are."""
    if reply not in REPLIES:
        raise ValueError(f"reasoning reply {reply!r}; choose one of {REPLIES}")
    if reply == "long" or "short_reply" not in sample.meta:
        return sample
    messages = [m for m in sample.messages if m["role"] != "assistant"]
    return dataclasses.replace(sample, messages=[*messages, assistant(EMPTY_THINK + sample.meta["short_reply"])])


def long_reply(steps: list[str], answer: int) -> str:
    return "<think>\n" + "\n".join(steps) + "\n</think>\n\n" + short_reply(answer)


def add_all(numbers: list[int], steps: list[str], what: str) -> int:
    """Add ``numbers`` left to right, one step line each; then check: the last number plus the rest."""
    total = numbers[0]
    for n in numbers[1:]:
        line, total = step(total, "+", n)
        steps.append(f"Adding {n} to the running {what}: {line}.")
    if len(numbers) > 2:
        rest = total - numbers[-1]
        steps.append(f"Check in the other order: {numbers[-1]} + {rest} = {total}, the same {what}.")
    return total


def _count_sum_problem(rng: random.Random, difficulty: float) -> Problem:
    objs = [random_obj(rng, color=c, size="small") for c in ("red", "blue") for _ in range(rng.randint(1, 3))]
    objs = place(rng, objs, 112, 112, grid=28)
    counts = {c: sum(o.color == c for o in objs) for c in ("red", "blue")}
    question = "How many red and blue shapes are there together?"
    steps = [f"I count {n} {c} {'shape' if n == 1 else 'shapes'}." for c, n in counts.items()]
    line, total = step(counts["red"], "+", counts["blue"])
    steps.append(f"Together: {line}.")
    return render(objs, 112, 112), question, steps, total, {"counts": counts}


def _counting_problem(rng: random.Random, difficulty: float) -> Problem:
    high = 3 + round(3 * difficulty)
    objs = [random_obj(rng, color=c, size="small") for c in ("red", "blue") for _ in range(rng.randint(1, high))]
    objs = place(rng, objs, 168, 168)
    counts = {c: sum(o.color == c for o in objs) for c in ("red", "blue")}
    worth = {c: rng.randint(2, 4 + round(5 * difficulty)) for c in counts}
    question = (f"Each red shape is worth {worth['red']} points and each blue shape is worth {worth['blue']} points. "
                "How many points are in the picture?")
    steps = ["I need the total points of all the shapes in the picture.", "First I count the shapes of each colour."]
    steps += [f"I count {n} {c} {'shape' if n == 1 else 'shapes'}." for c, n in counts.items()]
    parts = []
    for c, n in counts.items():
        line, value = step(n, "*", worth[c])
        steps.append(f"Each {c} shape is worth {worth[c]} points, so the {c} shapes give {line} points.")
        parts.append(value)
    line, total = step(parts[0], "+", parts[1])
    steps.append(f"Now I add the two parts: {line}.")
    steps.append(f"Check: {parts[1]} + {parts[0]} = {total}, so the total is {total} points.")
    return render(objs, 168, 168), question, steps, total, {"counts": counts, "worth": worth}


def _chart_problem(rng: random.Random, difficulty: float) -> Problem:
    n = rng.randint(3, 3 + round(2 * difficulty))
    labels, values = [chr(65 + i) for i in range(n)], rng.sample(range(1, 10), n)
    question = "What is the sum of all the bars minus the shortest bar?"
    steps = ["I read the value printed above each bar."]
    steps += [f"Bar {label} has the value {value}." for label, value in zip(labels, values)]
    steps.append("Next I add up all the bars.")
    total = add_all(values, steps, "sum")
    low = min(values)
    steps.append(f"The shortest bar is bar {labels[values.index(low)]} with {low}.")
    line, answer = step(total, "-", low)
    steps.append(f"Subtracting it: {line}.")
    line, _ = step(answer, "+", low)
    steps.append(f"Check: {line}, which is the sum again, so {answer} is right.")
    steps.append(f"Final: {total} - {low} = {answer}.")
    return bar_chart(labels, values), question, steps, answer, {"labels": labels, "values": values}


def _printed_problem(rng: random.Random, difficulty: float) -> Problem:
    a, b, c = rng.randint(2, 9 + round(20 * difficulty)), rng.randint(2, 9), rng.randint(1, 20)
    image = canvas(168, 84)
    draw = ImageDraw.Draw(image)
    draw.text((12, 14), f"Boxes: {a}", fill=(0, 0, 0), font=font(18))
    draw.text((12, 46), f"Per box: {b}", fill=(0, 0, 0), font=font(18))
    question = f"How many items are there in all the boxes, after {c} more items are added?"
    steps = ["The image gives two numbers.", f"It says there are {a} boxes.", f"It says there are {b} items per box.",
             "First I find the items in the boxes by multiplying."]
    line, items = step(a, "*", b)
    steps.append(f"Items in the boxes: {line}.")
    line, total = step(items, "+", c)
    steps.append(f"Then {c} more items are added: {line}.")
    steps.append(f"Check: {b} * {a} = {items} and {c} + {items} = {total}.")
    return image, question, steps, total, {"numbers": [a, b, c]}


def _table_problem(rng: random.Random, difficulty: float) -> Problem:
    n = rng.randint(3, 3 + round(2 * difficulty))
    names, values = rng.sample(ITEMS, n), rng.sample(range(1, 10), n)
    bought = rng.sample(range(n), 2 + round(rng.random() * difficulty))  # two or three rows to add
    price = rng.randint(2, 4 + round(5 * difficulty))
    wanted = [names[i] for i in bought]
    question = (f"Each fruit costs {price} coins. How many coins do all the {', '.join(wanted[:-1])} and "
                f"{wanted[-1]} in the table cost?")
    steps = ["I need the number of each fruit asked about, from the table."]
    steps += [f"The table lists {values[i]} {names[i]}." for i in bought]
    count = add_all([values[i] for i in bought], steps, "count")
    line, total = step(count, "*", price)
    steps.append(f"At {price} coins each: {line} coins.")
    line, _ = step(price, "*", count)
    steps.append(f"Check: {line}, the same, so they cost {total} coins.")
    return table(names, values), question, steps, total, {"labels": names, "values": values, "asked": wanted}


def visual_math(rng: random.Random, difficulty: float) -> Sample:
    make = _count_sum_problem if easy(rng, difficulty) else rng.choice(
        (_counting_problem, _chart_problem, _table_problem, _printed_problem))
    image, question, steps, total, info = make(rng, difficulty)
    return Sample("visual_math", [user(image, question), assistant(long_reply(steps, total))], {"number": total},
                  {"short_answer": str(total), "short_reply": short_reply(total), "problem": make.__name__.strip("_"),
                   "steps": steps, **info})


NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay")
THINGS = ("marbles", "apples", "stamps", "cards", "shells")


def _one_step_problem(rng: random.Random, difficulty: float) -> tuple[str, list[str], int]:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 0.5:
        question = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        line, total = step(a, "+", b)
        steps = [f"{name} starts with {a} {thing}.", f"{name} gets {b} more: {line}."]
    else:
        a, b = max(a, b), min(a, b)
        question = f"{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have now?"
        line, total = step(a, "-", b)
        steps = [f"{name} starts with {a} {thing}.", f"{name} gives away {b}: {line}."]
    return question, steps, total


def _bags_problem(rng: random.Random, difficulty: float) -> tuple[str, list[str], int]:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, bags, per = rng.randint(2, 20), rng.randint(2, 3 + round(4 * difficulty)), rng.randint(2, 9)
    give = rng.randint(1, a)
    question = (f"{name} has {a} {thing}. {name} buys {bags} bags with {per} {thing} in each bag, "
                f"then gives away {give} {thing}. How many {thing} does {name} have now?")
    steps = [f"{name} starts with {a} {thing}.", f"There are {bags} bags with {per} {thing} each."]
    line, bought = step(bags, "*", per)
    steps.append(f"The bags hold {line} {thing}.")
    line, have = step(a, "+", bought)
    steps.append(f"After buying: {line}.")
    line, total = step(have, "-", give)
    steps.append(f"After giving {give} away: {line}.")
    steps.append(f"Check: {total} + {give} = {have}, and {have} - {bought} = {a}, the starting number.")
    steps.append(f"So {name} has {have} - {give} = {total} {thing}.")
    return question, steps, total


def _trip_problem(rng: random.Random, difficulty: float) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    speeds = [rng.randint(3, 9 + round(10 * difficulty)) for _ in range(rng.randint(2, 2 + round(2 * difficulty)))]
    hours = rng.randint(2, 4)
    question = (f"{name} cycles for {hours} hours on each of {len(speeds)} days, at "
                + ", ".join(f"{s}" for s in speeds) + " km per hour on the successive days. How many km in total?")
    steps = [f"There are {len(speeds)} days and each day lasts {hours} hours."]
    daily = []
    for day, speed in enumerate(speeds, 1):
        line, km = step(speed, "*", hours)
        steps.append(f"Day {day}: {line} km.")
        daily.append(km)
    total = add_all(daily, steps, "distance")
    steps.append(f"Check with the speeds: {sum(speeds)} * {hours} = {total}.")
    return question, steps, total


def _ages_problem(rng: random.Random, difficulty: float) -> tuple[str, list[str], int]:
    a, b, c = rng.sample(NAMES, 3)
    young, times = rng.randint(2, 6 + round(6 * difficulty)), rng.randint(2, 3)
    older, later = rng.randint(1, 9), rng.randint(1, 10)
    question = (f"{c} is {young} years old. {b} is {times} times as old as {c}. {a} is {older} years older than "
                f"{b}. How old will {a} be in {later} years?")
    steps = [f"{c} is {young}."]
    line, age_b = step(young, "*", times)
    steps.append(f"{b} is {times} times as old: {line}.")
    line, age_a = step(age_b, "+", older)
    steps.append(f"{a} is {older} years older than {b}: {line}.")
    line, total = step(age_a, "+", later)
    steps.append(f"In {later} years {a} will be {line}.")
    line, _ = step(total, "-", later)
    steps.append(f"Check: {line}, which is {a}'s age now, and {age_a} - {older} = {age_b}, which is {b}'s age.")
    steps.append(f"So {a} will be {age_a} + {later} = {total}.")
    return question, steps, total


def text_reasoning(rng: random.Random, difficulty: float) -> Sample:
    make = _one_step_problem if easy(rng, difficulty) else rng.choice((_bags_problem, _trip_problem, _ages_problem))
    question, steps, total = make(rng, difficulty)
    return Sample("text_reasoning", [user(question), assistant(long_reply(steps, total))], {"number": total},
                  {"short_answer": str(total), "short_reply": short_reply(total), "problem": make.__name__.strip("_"),
                   "steps": steps})


COLOR_FACTS = {"red": "the colour of ripe strawberries", "green": "the colour of fresh grass",
               "blue": "the colour of a clear sky", "yellow": "the colour of lemons", "purple": "the colour of grapes",
               "orange": "the colour of oranges"}
SHAPE_FACTS = {"circle": "has no corners", "square": "has four equal sides", "triangle": "has three sides"}


def text(rng: random.Random, difficulty: float) -> Sample:
    """Plain text: short descriptive sentences about the world's colours and shapes."""
    kind = rng.randrange(3)
    if kind == 0:
        color = rng.choice(list(COLOR_FACTS))
        question, reply = f"Tell me about the colour {color}.", f"{color.capitalize()} is {COLOR_FACTS[color]}."
    elif kind == 1:
        shape = rng.choice(list(SHAPE_FACTS))
        question, reply = f"What do you know about a {shape}?", f"A {shape} {SHAPE_FACTS[shape]}."
    else:
        a, b = rng.sample(list(SHAPE_FACTS), 2)
        question = f"How is a {a} different from a {b}?"
        reply = f"A {a} {SHAPE_FACTS[a]}, while a {b} {SHAPE_FACTS[b]}."
    return Sample("text", [user(question), assistant(reply)], {"text": reply}, {"kind": kind})
