"""Reasoning with long chains of thought, and plain text.

Every chain of thought is computed by the generator step by step, so it is correct by
construction: each step is a line ``a op b = c`` (tests re-evaluate them all) and the final
answer is ``\\boxed{N}``, which math-verify checks. The assistant reply is the long form
(``<think>`` ... ``</think>`` then the answer); ``meta["short_answer"]`` is the direct answer.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from mimolab.data.world.scene import Sample, assistant, canvas, font, place, random_obj, render, user


def _reply(steps: list[str], total: int) -> str:
    return "<think>\n" + "\n".join(steps) + "\n</think>\n\nThe answer is \\boxed{" + str(total) + "}."


def _op(a: int, op: str, b: int) -> tuple[str, int]:
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return f"{a} {op} {b} = {value}", value


def _counting_problem(rng: random.Random, difficulty: float):
    counts = {"red": rng.randint(1, 3 + round(3 * difficulty)), "blue": rng.randint(1, 3 + round(3 * difficulty))}
    objs = [random_obj(rng, color=color, size="small") for color, n in counts.items() for _ in range(n)]
    objs = place(rng, objs, 168, 168)
    counts = {c: sum(o.color == c for o in objs) for c in counts}
    worth = {c: rng.randint(2, 4 + round(5 * difficulty)) for c in counts}
    question = (f"Each red shape is worth {worth['red']} points and each blue shape is worth {worth['blue']} points. "
                "How many points are in the picture?")
    steps = ["First I count the shapes in the picture.",
             *(f"There {'is' if n == 1 else 'are'} {n} {c} {'shape' if n == 1 else 'shapes'}." for c, n in counts.items())]
    line, red = _op(counts["red"], "*", worth["red"])
    steps.append(f"The red shapes are worth {line} points.")
    line, blue = _op(counts["blue"], "*", worth["blue"])
    steps.append(f"The blue shapes are worth {line} points.")
    line, total = _op(red, "+", blue)
    steps.append(f"Together: {line}.")
    return render(objs, 168, 168), question, steps, total, {"counts": counts, "worth": worth}


def _printed_problem(rng: random.Random, difficulty: float):
    a, b = rng.randint(2, 9 + round(20 * difficulty)), rng.randint(2, 9)
    c = rng.randint(1, 20)
    image = canvas(168, 84)
    draw = ImageDraw.Draw(image)
    draw.text((12, 14), f"Boxes: {a}", fill=(0, 0, 0), font=font(18))
    draw.text((12, 46), f"Per box: {b}", fill=(0, 0, 0), font=font(18))
    question = f"How many items are there in all the boxes, after {c} more items are added?"
    steps = [f"The image says there are {a} boxes with {b} items per box."]
    line, items = _op(a, "*", b)
    steps.append(f"Items in the boxes: {line}.")
    line, total = _op(items, "+", c)
    steps.append(f"After adding {c}: {line}.")
    return image, question, steps, total, {"numbers": [a, b, c]}


def visual_math(rng: random.Random, difficulty: float) -> Sample:
    make = _counting_problem if rng.random() < 0.6 else _printed_problem
    image, question, steps, total, info = make(rng, difficulty)
    return Sample("visual_math", [user(image, question), assistant(_reply(steps, total))], {"number": total},
                  {"short_answer": str(total), "steps": steps, **info})


NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay")
THINGS = ("marbles", "apples", "stamps", "cards", "shells")


def text_reasoning(rng: random.Random, difficulty: float) -> Sample:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, bags, per = rng.randint(2, 20), rng.randint(2, 3 + round(4 * difficulty)), rng.randint(2, 9)
    give = rng.randint(1, a)
    question = (f"{name} has {a} {thing}. {name} buys {bags} bags with {per} {thing} in each bag, "
                f"then gives away {give} {thing}. How many {thing} does {name} have now?")
    steps = [f"{name} starts with {a} {thing}."]
    line, bought = _op(bags, "*", per)
    steps.append(f"The bags hold {line} {thing}.")
    line, have = _op(a, "+", bought)
    steps.append(f"After buying: {line}.")
    line, total = _op(have, "-", give)
    steps.append(f"After giving some away: {line}.")
    return Sample("text_reasoning", [user(question), assistant(_reply(steps, total))], {"number": total},
                  {"short_answer": str(total), "steps": steps})


FACTS = {"red": "the colour of ripe strawberries", "green": "the colour of fresh grass", "blue": "the colour of a clear sky",
         "yellow": "the colour of lemons", "purple": "the colour of grapes", "orange": "the colour of oranges"}
SHAPE_FACTS = {"circle": "has no corners", "square": "has four equal sides", "triangle": "has three sides"}


def text(rng: random.Random, difficulty: float) -> Sample:
    if rng.random() < 0.5:
        color = rng.choice(list(FACTS))
        question, reply = f"Tell me about the colour {color}.", f"{color.capitalize()} is {FACTS[color]}."
    else:
        shape = rng.choice(list(SHAPE_FACTS))
        question, reply = f"What do you know about a {shape}?", f"A {shape} {SHAPE_FACTS[shape]}."
    return Sample("text", [user(question), assistant(reply)], {"text": reply})
