"""Charts and tables: read a value, find the largest or smallest, take a difference.

Bar charts have lettered bars (A, B, ...) with their values printed above them; tables list
fruit names and counts in a ruled grid. Values are distinct, so 'the largest' is unambiguous.
Difficulty in [0, 1] adds bars/rows and the harder 'difference' question.
``bar_chart`` is reused by visual math.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from mimolab.data.world.scene import Sample, assistant, canvas, font, user

BAR_COLOR, INK, RULE = (40, 80, 220), (0, 0, 0), (120, 120, 120)
ITEMS = ("apples", "pears", "plums", "figs", "limes", "kiwis")


def bar_chart(labels: list[str], values: list[int]) -> Image.Image:
    """A 168x168 bar chart of values 1-9 (14 px per unit), each bar labelled below, valued above."""
    image = canvas(168, 168)
    draw = ImageDraw.Draw(image)
    bar, gap, base = 22, 8, 150
    draw.line((10, base, 160, base), fill=INK)
    for i, (label, value) in enumerate(zip(labels, values)):
        x = 16 + i * (bar + gap)
        draw.rectangle((x, base - 14 * value, x + bar, base - 1), fill=BAR_COLOR)
        draw.text((x + 6, base + 2), label, fill=INK, font=font(12))
        draw.text((x + 6, base - 14 * value - 14), str(value), fill=INK, font=font(12))
    return image


def table(names: list[str], values: list[int]) -> Image.Image:
    """A 168-wide ruled table with a header row ('item', 'count') and one row per name."""
    row = 20
    image = canvas(168, 28 * ((row * (len(names) + 1) + 8 + 27) // 28))
    draw = ImageDraw.Draw(image)
    for r, (name, value) in enumerate([("item", "count")] + list(zip(names, map(str, values)))):
        y = 4 + r * row
        draw.rectangle((8, y, 159, y + row), outline=RULE)
        draw.line((100, y, 100, y + row), fill=RULE)
        draw.text((14, y + 4), name, fill=INK, font=font(12))
        draw.text((108, y + 4), value, fill=INK, font=font(12))
    return image


def _question(rng: random.Random, difficulty: float, names: list[str], values: list[int],
              what: str) -> tuple[str, str, dict, str]:
    """(question, reply, answer, kind) about a chart or table whose entries are called ``what``."""
    kind = rng.choice(("read", "max", "min", "diff") if difficulty >= 0.3 else ("read", "max", "min"))
    ref = [f"bar {name}" if what == "bar" else f"the {name} row" for name in names]
    if kind == "read":
        i = rng.randrange(len(names))
        return f"What is the value of {ref[i]}?", str(values[i]), {"number": values[i]}, kind
    if kind in ("max", "min"):
        i = values.index(max(values) if kind == "max" else min(values))
        word = "largest" if kind == "max" else "smallest"
        return f"Which {what} has the {word} value?", names[i], {"text": names[i]}, kind
    i, j = rng.sample(range(len(names)), 2)
    diff = values[i] - values[j]
    return f"What is {ref[i]} minus {ref[j]}?", str(diff), {"number": diff}, kind


def chart(rng: random.Random, difficulty: float) -> Sample:
    n = rng.randint(3, 3 + round(2 * difficulty))
    values = rng.sample(range(1, 10), n)
    if rng.random() < 0.6:
        names, what, form = [chr(65 + i) for i in range(n)], "bar", "bar_chart"
        image = bar_chart(names, values)
    else:
        names, what, form = rng.sample(ITEMS, n), "row", "table"
        image = table(names, values)
    question, reply, answer, kind = _question(rng, difficulty, names, values, what)
    return Sample("chart", [user(image, question), assistant(reply)], answer,
                  {"form": form, "labels": names, "values": values, "kind": kind})
